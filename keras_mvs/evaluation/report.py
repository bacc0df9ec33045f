"""The metrics in words: readable names, units and aligned columns."""

from keras_mvs import console

# Readable names and units of the metrics; "depth" is the cameras' unit.
METRICS = {
    "mean_abs_error": ("mean absolute depth error", "depth"),
    "within_1_intervals": ("within 1 depth interval", "%"),
    "within_2_intervals": ("within 2 depth intervals", "%"),
    "within_4_intervals": ("within 4 depth intervals", "%"),
    "num_pixels": ("valid pixels scored", ""),
    "num_views_evaluated": ("views scored", ""),
    "train_steps": ("training steps", ""),
    "accuracy": ("accuracy (mean distance to the truth)", "depth"),
    "completeness": ("completeness (mean distance from the truth)",
                     "depth"),
    "overall": ("overall (mean of the two)", "depth"),
    "precision": ("precision", "%"),
    "recall": ("recall", "%"),
    "fscore": ("F-score", "%"),
    "threshold": ("distance threshold", "depth"),
}


def describe_metrics(metrics: dict, title: str, unit: str = "mm") -> str:
    """Lines `  readable name   value unit` under `title`.

    Args:
        metrics: metric name to value; ints print as ints, fractions of
            the `%` metrics as percentages, unknown names as they are.
        title: the first line, naming the data scored.
        unit: the depth unit of the cameras.
    """
    rows = []
    for key, value in metrics.items():
        label, kind = METRICS.get(key, (key.replace("_", " "), ""))
        rows.append((label, console.format_number(value, kind, unit)))
    width = max(len(label) for label, _ in rows) if rows else 0
    return "\n".join([title] + [f"  {label:<{width}}  {text}"
                                  for label, text in rows])


def describe_depth_metrics(metrics: dict, data: str,
                           unit: str = "mm") -> str:
    """The depth metrics of `evaluate_depth` for a person to read."""
    return describe_metrics(
        metrics, f"Depth of {data}, against ground truth (depth unit "
        f"{unit}; one depth interval = the view's depth range / 192):", unit)
