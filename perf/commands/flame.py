"""`apkperf flame`: profile one build of a scenario with py-spy (native frames, whole process
tree, raw folded stacks kept) and pyinstrument; render SVG and speedscope from the folded
stacks. `--diff BASE` profiles BASE and the working tree and renders differential
flamegraphs in both directions."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from perf import flame
from perf.commands.run import split_impls, split_scenarios
from perf.gitrefs import WORKTREE, Tree, prepare_tree, repo_root
from perf.runner import Job, Plan, Side
from perf.scenarios import ScenarioError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flame", help="py-spy/pyinstrument profiles and flamegraphs of a build")
    p.add_argument("--workload", default="small")
    p.add_argument("--scenario", default="hot")
    p.add_argument("--impl", action="append", default=[])
    p.add_argument("--tree", default=WORKTREE, help="git ref to profile (default working tree)")
    p.add_argument("--diff", metavar="BASE", help="also profile BASE and render a diff")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--no-native", action="store_true", help="py-spy without --native")
    p.add_argument("--no-pyinstrument", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="default: <repo>/flamegraphs")
    p.set_defaults(func=run)


def _pyspy() -> str:
    exe = shutil.which("py-spy") or str(Path(__file__).resolve().parents[2] / ".venv/bin/py-spy")
    if not Path(exe).exists():
        raise ScenarioError("py-spy is not installed (pip install py-spy)")
    return exe


def profile(root: Path, tree: Tree, args: argparse.Namespace, out_dir: Path, name: str,
            *, pyinstrument: bool) -> dict[str, Path]:
    """Profile one build of (workload, scenario, impl) from `tree`; returns the files made."""
    from perf.workloads import prepare_workload

    impl = split_impls(args.impl)[0]
    scenario = split_scenarios(args.scenario)[0]
    workload = prepare_workload(args.workload, root / ".perf" / "workloads")
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{name}.raw.txt"
    made: dict[str, Path] = {}
    spy = _pyspy()

    def with_pyspy(argv: list[str], side: Side, tag: str) -> list[str]:
        cmd = [spy, "record", "--subprocesses", "--rate", str(args.rate), "--format", "raw",
               "-o", str(raw)]
        if not args.no_native:
            cmd.append("--native")
        return [*cmd, "--", *argv]

    def with_pyinstrument(argv: list[str], side: Side, tag: str) -> list[str]:
        return [argv[0], "-m", "pyinstrument", "-r", "html", "-o",
                str(out_dir / f"{name}.pyinstrument.html"), *argv[1:]]

    wraps = [("pyspy", with_pyspy)]
    if pyinstrument:
        wraps.append(("pyinstrument", with_pyinstrument))
    for _kind, wrap in wraps:
        plan = Plan(workload=args.workload, scenarios=[scenario], sides=[Side(impl, tree, impl)],
                    repeat=1, warmup=0, results_root=None, work_root=root / ".perf" / "run",
                    wrap=wrap)
        Job(plan, workload, log=lambda _m: None).run()
    if not raw.exists() or raw.stat().st_size == 0:
        raise ScenarioError(f"py-spy wrote no samples to {raw}")
    folded = flame.normalise(flame.read_folded(raw))
    made["raw"] = raw
    made["folded"] = out_dir / f"{name}.folded"
    flame.write_folded(folded, made["folded"])
    title = f"{workload.name} / {scenario} / {impl} @ {tree.commit[:10]}" + (
        " (dirty)" if tree.dirty else "")
    made["svg"] = out_dir / f"{name}.svg"
    made["svg"].write_text(flame.render_svg(
        folded, title=title, subtitle=f"py-spy {args.rate} Hz, process tree"
        f"{', native frames' if not args.no_native else ''}; {flame.total(folded)} samples"))
    made["speedscope"] = out_dir / f"{name}.speedscope.json"
    flame.write_speedscope(folded, made["speedscope"], name=title)
    if pyinstrument:
        made["pyinstrument"] = out_dir / f"{name}.pyinstrument.html"
    return made


def _name(args: argparse.Namespace, tree: Tree) -> str:
    impl = split_impls(args.impl)[0].replace(",", "+").replace("=", "-").replace(":", "")
    suffix = "-dirty" if tree.dirty else ""
    return f"{args.workload.replace('/', '_')}-{args.scenario}-{impl}-{tree.commit[:10]}{suffix}"


def run(args: argparse.Namespace) -> int:
    root = repo_root()
    out_dir = args.out or root / "flamegraphs"
    tree = prepare_tree(root, args.tree)
    name = _name(args, tree)
    made = profile(root, tree, args, out_dir, name, pyinstrument=not args.no_pyinstrument)
    for kind, path in made.items():
        print(f"{kind:13s} {path}")
    if args.diff:
        base_tree = prepare_tree(root, args.diff)
        base_name = _name(args, base_tree)
        base_made = profile(root, base_tree, args, out_dir, base_name, pyinstrument=False)
        base_f = flame.read_folded(base_made["folded"])
        head_f = flame.read_folded(made["folded"])
        fwd, rev = flame.render_diff_pair(
            base_f, head_f, out_dir / f"{base_name}-vs-{tree.commit[:10]}",
            base_label=f"{args.diff} ({base_tree.commit[:10]})",
            head_label=f"{args.tree} ({tree.commit[:10]}{'+dirty' if tree.dirty else ''})")
        print(f"{'diff':13s} {fwd}\n{'diff reverse':13s} {rev}")
    return 0
