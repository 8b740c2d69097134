"""What ``prune`` returns: the pruned model and a before/after summary."""
import dataclasses


@dataclasses.dataclass
class PruneResult:
    """The pruned model and what pruning did.

    model: the pruned inference model.  kept: original indices still
    present, ``{"types": [...], "<conv>": [...]}``.  before / after: cost
    (``tflm_caps.pruning.cost.model_cost``) plus ``validation_accuracy``
    (held out from the training split) and ``test_accuracy`` (held-out
    split, reported only).  steps: one record per pruning step.
    stopped_early: the accuracy floor stopped the schedule.
    """

    model: object = dataclasses.field(repr=False)
    kept: dict
    before: dict
    after: dict
    steps: list
    stopped_early: bool
    settings: dict
    seconds: float

    def as_dict(self):
        """JSON-friendly summary (everything except the model)."""
        return {"kept": self.kept, "before": self.before, "after": self.after,
                "steps": self.steps, "stopped_early": self.stopped_early,
                "settings": self.settings, "seconds": self.seconds}

    def table(self):
        """Plain-text before/after summary and per-layer table."""
        return format_table(self.as_dict())


def _change(a, b):
    if a == 0:
        return ""
    return f"{100.0 * (b - a) / a:+.1f}%"


def format_table(summary):
    """The text tables of a ``PruneResult.as_dict()``."""
    b, a = summary["before"], summary["after"]
    rows = [("capsule types", b["capsule_types"], a["capsule_types"]),
            ("input capsules", b["input_capsules"], a["input_capsules"]),
            ("parameters", b["params"], a["params"]),
            ("MACs per inference", b["macs"], a["macs"]),
            ("est. int8 bytes", b["int8_bytes"], a["int8_bytes"])]
    lines = [f"{'':<27}{'before':>12}{'after':>12}{'change':>10}"]
    for label, x, y in rows:
        lines.append(f"{label:<27}{x:>12,}{y:>12,}{_change(x, y):>10}")
    s = summary["settings"]
    for key, label in (("validation_accuracy", f"validation accuracy ({s['validation_images']})"),
                       ("test_accuracy", f"held-out accuracy ({s['test_images']})")):
        x, y = b[key], a[key]
        lines.append(f"{label:<27}{100 * x:>11.2f}%{100 * y:>11.2f}%"
                     f"{100 * (y - x):>+8.2f} pt")
    lines += ["", f"{'layer':<16}{'kind':<13}{'params':>21}{'MACs':>25}{'est. int8 bytes':>23}"]
    after_rows = {r["name"]: r for r in a["layers"]}
    for r in b["layers"]:
        n = after_rows.get(r["name"], {"params": 0, "macs": 0, "int8_bytes": 0})
        lines.append(f"{r['name']:<16}{r['kind']:<13}"
                     f"{r['params']:>10,} ->{n['params']:>9,}"
                     f"{r['macs']:>12,} ->{n['macs']:>10,}"
                     f"{r['int8_bytes']:>11,} ->{n['int8_bytes']:>9,}")
    if summary["steps"]:
        lines += ["", f"{'step':<6}{'types':>6}  {'channels':<20}{'params':>10}"
                      f"{'val. acc.':>11}  {'kept':<5}"]
        for st in summary["steps"]:
            ch = ",".join(f"{k}={v}" for k, v in st["channels"].items()) or "-"
            lines.append(f"{st['step']:<6}{st['capsule_types']:>6}  {ch:<20}{st['params']:>10,}"
                         f"{100 * st['validation_accuracy']:>10.2f}%  "
                         f"{'yes' if st['accepted'] else 'no'}")
    if summary["stopped_early"]:
        lines.append(f"stopped early: validation accuracy fell below the floor "
                     f"{100 * s['accuracy_floor']:.2f}%; the last accepted model is kept")
    return "\n".join(lines)
