"""The per-epoch record fields, shared by the trial engine and the store (no torch import here)."""

#: The per-epoch record of every trial; optimizer diagnostics follow as extra fields.
RECORD_FIELDS = (
    "epoch",
    "train_loss",
    "train_acc",
    "grad_norm",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "lr",
    "lyapunov_drift",
    "step",
    "time_s",
)
