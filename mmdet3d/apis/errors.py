"""Bad input reported the way the tools report it: one line that names the file or key, whichever process (or
DataLoader worker) met it; the traceback goes to a file in the run directory."""
import os
import traceback

__all__ = ["INPUT_ERRORS", "one_line", "report_input_error"]

# What bad input (files, configs, checkpoints, data) raises; anything else is a bug and keeps its traceback.
INPUT_ERRORS = (ValueError, FileNotFoundError, KeyError, OSError)
TRACEBACK_FILE = "traceback.txt"


def one_line(error):
    """The message of ``error`` as one line. An error re-raised from a DataLoader worker carries the worker's
    traceback in its message ("Caught ValueError in DataLoader worker process 0. Original Traceback ..."); its last
    line is the original message."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if "Original Traceback" in str(text):
        last = lines[-1]
        name = f"{type(error).__name__}: "
        return last[len(name):] if last.startswith(name) else last
    return " ".join(lines)


def close_progress_bars():
    """Ends open tqdm bars (each on its own line), so that a message printed next starts a line of its own."""
    from tqdm import tqdm
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def report_input_error(error, run_dir=None):
    """``one_line(error)``, with the full traceback written to ``<run_dir>/traceback.txt`` when a run directory
    exists (the message then says where). Open progress bars are closed first."""
    close_progress_bars()
    message = one_line(error)
    if run_dir and os.path.isdir(run_dir):
        path = os.path.join(run_dir, TRACEBACK_FILE)
        with open(path, "w") as f:
            f.write("".join(traceback.format_exception(error)))
        message += f" (traceback: {path}; --debug shows it here)"
    return message
