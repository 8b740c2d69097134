"""A ProfileResult as a text table, a Markdown table and a PNG bar chart."""


def _n(v):
    return "-" if v is None else f"{v:,.0f}"


def _shape(shape):
    return "x".join(str(d) for d in shape) or "-"


def table(result):
    """Plain-text report of a ProfileResult."""
    r = result
    rows = [("#", "op", "kind", "output", "instructions", "share")]
    total = r.invoke_instructions or 1.0
    for op in r.ops:
        rows.append((str(op.index), op.name, op.kind, _shape(op.output_shape),
                     _n(op.instructions), f"{100.0 * op.instructions / total:.1f} %"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {0, 4, 5}
    lines = [f"{r.model} on {r.target} (QEMU {r.board}), TFLM {r.tree[:12]}, "
             f"{r.images} images of {r.data}"]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    spread = "" if r.invoke_min == r.invoke_max else \
        f" (min {_n(r.invoke_min)}, max {_n(r.invoke_max)})"
    a, f, b = r.arena, r.flash, r.bit_exact
    lines += [
        f"Invoke           {_n(r.invoke_instructions)} instructions per inference{spread}",
        f"AllocateTensors  {_n(r.allocate_instructions)} instructions",
        f"calibration      {r.instructions_per_tick:.3f} instructions per SysTick tick "
        f"(measured); profiler cost {r.profiler_overhead:.1f} instructions per op"
        if r.profiler_overhead is not None else
        f"calibration      {r.instructions_per_tick:.3f} instructions per SysTick tick",
        f"arena            target minimum {_n(a.get('target_minimum'))} B "
        f"(bisection on {r.target}, {a.get('probes', 0)} runs); arena_used_bytes() "
        f"{_n(a.get('target_used'))} B; host minimum {_n(a.get('host_minimum'))} B; "
        f"export header {_n(a.get('export_header'))} B",
        f"flash            model {_n(f['model'])} B; code {_n(f['code'])} B, of which "
        f"TFLM + CMSIS-NN + tflm-caps {_n(f['code_for_inference'])} B "
        f"(tflm-caps {_n(f['code_parts'].get('tflm_caps', 0))} B)",
        f"bit-exact        {b['identical']} of {b['compared']} inferences identical to the "
        "host TFLM runner",
    ]
    return "\n".join(lines)


def markdown_rows(results):
    """Markdown table of the per-op instructions of several results (one
    column per result, e.g. Cortex-M7 and M55), ops matched by position."""
    head = "| op | output | " + " | ".join(r.target for r in results) + " |"
    sep = "| --- | --- | " + " | ".join("---:" for _ in results) + " |"
    lines = [head, sep]
    for k, op in enumerate(results[0].ops):
        cells = [_n(r.ops[k].instructions) for r in results]
        lines.append(f"| {op.name} | {_shape(op.output_shape)} | " + " | ".join(cells) + " |")
    lines.append("| whole Invoke | | " + " | ".join(f"**{_n(r.invoke_instructions)}**"
                                                     for r in results) + " |")
    return "\n".join(lines)


def plot(result, path):
    """PNG bar chart of instructions per operator."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{op.index}: {op.name}" for op in result.ops]
    values = [op.instructions / 1e6 for op in result.ops]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.6))
    bars = ax.barh(range(len(values)), values,
                   color=["#c0504d" if op.kind == "custom" else "#4f81bd" for op in result.ops])
    ax.set_yticks(range(len(values)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("million instructions per inference")
    ax.set_title(f"{result.model} on {result.target} (QEMU {result.board}): "
                 f"{result.invoke_instructions / 1e6:.3f} M per Invoke", fontsize=10)
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.3f}",
                va="center", fontsize=8)
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color="#4f81bd", label="TFLM builtin"),
                       Patch(color="#c0504d", label="tflm-caps custom")],
              loc="lower right", fontsize=8)
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
