"""Human preference labels through files: a blind export for labellers (JSONL or Label Studio tasks)
and a strict import of their labels, mapped back to each candidate's own a/b order."""

from openrlhf_pilaf.labelling.export import (
    DISPLAY_KEYS,
    LABEL_STUDIO_TASKS_FILENAME,
    TO_LABEL_FILENAME,
    LabellingExport,
    display_swap,
    displayed_rows,
    export_for_labelling,
    stable_hash,
    write_label_studio_tasks,
    write_to_label,
)
from openrlhf_pilaf.labelling.label_studio import LABEL_STUDIO_CONFIG
from openrlhf_pilaf.labelling.labels_file import (
    ACCEPTED_EXTENSIONS,
    VALID_LABELS,
    LabelSet,
    LabelsFileError,
    load_labels,
    read_label_studio_export,
    read_labels,
)

__all__ = [
    "ACCEPTED_EXTENSIONS",
    "DISPLAY_KEYS",
    "LABEL_STUDIO_CONFIG",
    "LABEL_STUDIO_TASKS_FILENAME",
    "TO_LABEL_FILENAME",
    "VALID_LABELS",
    "LabelSet",
    "LabellingExport",
    "LabelsFileError",
    "display_swap",
    "displayed_rows",
    "export_for_labelling",
    "load_labels",
    "read_label_studio_export",
    "read_labels",
    "stable_hash",
    "write_label_studio_tasks",
    "write_to_label",
]
