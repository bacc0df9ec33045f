"""The run's `backup/` folder (Keras `BackupAndRestore`): checked before a
run resumes from it, and the step it resumes at.

The callbacks that keep the backup and the checkpoints finite when the loss
fails (`StopOnNaN`, `GuardedBackup`, `AtomicCheckpoint`) are in
`keras_mvs.training.callbacks`.
"""

import json
import pathlib


def check_backup(backup: pathlib.Path) -> None:
    """Refuses a damaged `backup/` before resuming from it.

    Keras's BackupAndRestore falls back to `latest.weights.h5.bkp` when the
    weights cannot be read, but reports neither file when both are damaged,
    and a garbled `training_metadata.json` ends in a JSONDecodeError.

    Raises:
        ValueError: naming the damaged file and what to do.
    """
    backup = pathlib.Path(backup)
    advice = (f"delete {backup} to start the run over (checkpoints/ keeps "
              "the periodic weights)")
    weights = [backup / "latest.weights.h5",
               backup / "latest.weights.h5.bkp"]
    present = [path for path in weights if path.exists()]
    if present:
        import h5py

        errors = []
        for path in present:
            try:
                with h5py.File(path, "r") as handle:
                    list(handle.keys())
            except OSError as error:
                errors.append(f"{path} ({error})")
        if len(errors) == len(present):
            raise ValueError(f"cannot resume: the backup weights cannot be "
                             f"read: {'; '.join(errors)}; {advice}")
    metadata = backup / "training_metadata.json"
    if metadata.exists():
        try:
            epoch = json.loads(metadata.read_text())["epoch"]
            if not isinstance(epoch, int) or epoch < 0:
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ValueError(
                f"cannot resume: {metadata} is not the JSON Keras writes "
                '(expected {"epoch": N, "batch": M}); ' + advice) from None


def backup_step(backup: pathlib.Path, period: int) -> int:
    """The optimizer step a run resumes from: the backup's finished periods
    times the period (0 without a backup)."""
    metadata = pathlib.Path(backup) / "training_metadata.json"
    if not metadata.exists():
        return 0
    return int(json.loads(metadata.read_text())["epoch"]) * period


def has_backup(backup: pathlib.Path) -> bool:
    """Whether `backup/` holds anything."""
    return any(pathlib.Path(backup).glob("*"))
