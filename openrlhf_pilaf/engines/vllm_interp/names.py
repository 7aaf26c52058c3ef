"""Names shared by the plugin entry point and the model (kept import-light: no vLLM, no torch)."""

# architecture name -> lazy "module:Class" target for vLLM's ModelRegistry
ARCHITECTURES: dict[str, str] = {}
