"""Training-side integration with OpenRLHF: reference models, launch wiring, (later) the DPO loop."""
