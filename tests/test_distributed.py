"""torch.distributed: one reduction per phase end, rank 0 writes, and no rank is left hanging.

Each multi-process test starts two real ranks (gloo on CPU) as subprocesses of this very file,
the way torchrun does (``RANK``/``WORLD_SIZE`` in the environment, ``tw.init`` before
``init_process_group``), with each rank's stdout and stderr in its own file and a hard timeout:
a hung rank is killed and the test fails instead of hanging the suite.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytest

WORLD = 2
HARD_TIMEOUT_S = 60.0  # the whole launch; each scenario takes a few seconds
PG_TIMEOUT_S = 8.0  # a collective left without its partner fails after this, never hangs
SHORT_PG_TIMEOUT_S = 2.0  # for the scenario that waits for that timeout on purpose


# -- the launcher (runs in pytest) -----------------------------------------------------------------
def launch(scenario, tmp_path, timeout=HARD_TIMEOUT_S):
    """Run ``scenario`` on two ranks; return each rank's result dict, stdout and stderr."""
    procs = []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                   CI="1", PYTHONUNBUFFERED="1")
        env.pop("TORCHWATCH_DISABLE", None)
        out = open(tmp_path / f"out_{rank}.txt", "w")
        err = open(tmp_path / f"err_{rank}.txt", "w")
        procs.append((subprocess.Popen(
            [sys.executable, __file__, scenario, str(tmp_path)], env=env, stdout=out,
            stderr=err, cwd=str(tmp_path),
        ), out, err))
    deadline = time.monotonic() + timeout
    hung = []
    for rank, (proc, out, err) in enumerate(procs):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung.append(rank)
    for proc, out, err in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()
    # less the lines gloo itself prints as ranks connect (torch 2.8: "[Gloo] Rank 0 is connected
    # to 1 peer ranks..."), which are not torchwatch's
    outs = [_without_gloo((tmp_path / f"out_{r}.txt").read_text()) for r in range(WORLD)]
    errs = [_without_gloo((tmp_path / f"err_{r}.txt").read_text()) for r in range(WORLD)]
    if hung:
        pytest.fail(f"ranks {hung} of {scenario!r} hung past {timeout}s; stderr:\n"
                    + "\n".join(errs))
    results = []
    for rank in range(WORLD):
        path = tmp_path / f"result_{rank}.json"
        if not path.exists():
            pytest.fail(f"rank {rank} of {scenario!r} wrote no result; stderr:\n{errs[rank]}")
        results.append(json.loads(path.read_text()))
    return results, outs, errs


def _without_gloo(text):
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("[Gloo] "))


def record_dict(record):
    return {"epoch": record.epoch, "phase": record.phase, "metrics": record.metrics,
            "time_s": record.time_s, "samples": record.samples, "steps": record.steps,
            "nested": record.nested}


# -- the scenarios (run in each rank's process) ----------------------------------------------------
def start_group(tmp, timeout_s=PG_TIMEOUT_S):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/store", rank=int(os.environ["RANK"]),
        world_size=WORLD, timeout=datetime.timedelta(seconds=timeout_s),
    )
    return dist.get_rank()


def scenario_loop(tmp):
    """A watched DDP loop of two epochs, plus the phases whose reductions are unusual."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import torchwatch as tw
    from torchwatch.distributed import MAX_PACKED, collective_device

    run = tw.init(logdir=f"{tmp}/runs", total_epochs=2, progress=False)  # before the group
    rank_at_init = run.rank
    rank = start_group(tmp)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(8, 1))
    ddp = DDP(model)
    run.models = [ddp]
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(100 + rank)
    n = 10 + rank  # batches of 4, 4, 2 on rank 0 and 4, 4, 3 on rank 1: an uneven last batch
    x = torch.randn(n, 4, generator=generator) + 2 * rank  # so the ranks' losses differ
    y = torch.randn(n, 1, generator=generator)
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, n, 4)]
    out = {"rank_at_init": rank_at_init, "device": str(collective_device()), "pid": os.getpid(),
           "steps": [], "returned": [], "modes": {}, "probe": None, "warnings": []}

    @tw.watch_epoch
    def train_one_epoch(ddp, batches):
        out["modes"]["train"] = [ddp.training, ddp.module.training, ddp.module[1].training]
        total = 0.0
        for xb, yb in tw.steps(batches):
            loss = F.mse_loss(ddp(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tw.log(batch_loss=loss, n=len(xb))
            out["steps"].append([loss.item(), len(xb)])  # the test's own bookkeeping
            total += loss.detach()
        return total / len(batches)

    for epoch in range(2):
        out["returned"].append(float(train_one_epoch(ddp, batches)))
        with tw.phase("val") as p:
            out["modes"]["val"] = [ddp.training, ddp.module.training, ddp.module[1].training]
            tw.log(acc=0.5 + 0.25 * rank, n=1 + rank)
        out["modes"]["after_val"] = [ddp.training, ddp.module.training, ddp.module[1].training]
        out["val"] = p.metrics
        if rank == 0:  # a phase only rank 0 runs, between reduced ones
            with tw.phase("test", reduce=False) as p:
                tw.log(acc=0.125)
            out["test"] = p.metrics

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tw.phase("probe", reduce=True) as p:
            started = time.perf_counter()
            items = [torch.zeros(5, 1)] * 2 if rank == 0 else [torch.zeros(4, 1)] * 3
            for _ in tw.steps(slow(items, 0.15 * rank)):
                tw.log(common=float(rank + 1), n=1 + rank)
                if rank == 1:
                    tw.log(extra=7.0)  # only rank 1 logs it
            out["probe_own_s"] = time.perf_counter() - started
        out["probe"] = p.metrics
        objects, gather_objects = [], dist.all_gather_object  # a spy on the real collective

        def counted(*args, **kwargs):
            objects.append(1)
            return gather_objects(*args, **kwargs)

        dist.all_gather_object = counted
        with tw.phase("wide") as p:  # forty metrics, the same on both ranks: one exchange
            tw.log(n=1 + rank, **{f"m{i:02d}": float(i + rank) for i in range(40)})
        with tw.phase("wider") as wider:  # more than the fixed-size row carries
            tw.log(**{f"m{i:03d}": float(rank) for i in range(MAX_PACKED + 1)})
        dist.all_gather_object = gather_objects
        out["wide"] = p.metrics
        out["wider"] = sorted(set(wider.metrics.values())), len(wider.metrics)
        out["object_exchanges"] = len(objects)
        with tw.phase("edge") as p:  # inf on one rank, -inf on the other: NaN, not a crash
            tw.log(inf=float("inf") if rank == 0 else float("-inf"), fine=1.0)
        out["edge"] = {k: repr(v) for k, v in p.metrics.items()}
        with tw.phase("spiky"):  # a NaN only rank 1 logs; a value no rank may log
            tw.log(spike=float("nan") if rank == 1 else 1.0, note="text")
    out["warnings"] = [str(w.message) for w in caught if "only some ranks" in str(w.message)]
    out["ours"] = [str(w.message) for w in caught if issubclass(w.category, tw.TorchwatchWarning)]
    out["history"] = [record_dict(r) for r in run.history]
    tw.close()
    dist.destroy_process_group()
    return out


def slow(items, wait_s):
    for item in items:
        time.sleep(wait_s)
        yield item


def scenario_raise_and_exit(tmp, stay=False):
    """Rank 1 raises inside a phase and its process ends (or, with ``stay``, lives on without
    joining any collective); rank 0 finishes the phase."""
    import torch
    from torch import nn

    import torchwatch as tw

    rank = start_group(tmp, timeout_s=SHORT_PG_TIMEOUT_S if stay else PG_TIMEOUT_S)
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    run = tw.init(logdir=f"{tmp}/runs", model=model, progress=False)
    out = {"error": None}
    started = time.monotonic()
    try:
        with tw.phase("train"):
            for xb in tw.steps([torch.ones(2, 2)] * 2):
                tw.log(loss=model(xb).sum())
                if rank == 1:
                    raise ValueError("boom on rank 1")
    except Exception as error:
        out["error"] = {"type": type(error).__name__, "text": str(error),
                        "notes": getattr(error, "__notes__", [])}
    out["seconds"] = time.monotonic() - started
    out["history"] = len(run.history)
    out["training_after"] = model.training
    if stay and rank == 1:  # alive, but in no collective, until rank 0 has its answer
        deadline = time.monotonic() + 3 * SHORT_PG_TIMEOUT_S
        while not (Path(tmp) / "result_0.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return out  # no destroy_process_group: rank 1's process simply ends, as on a crash


def scenario_raise_and_go_on(tmp):
    """Rank 1 catches an exception that left its epoch-0 phase and starts epoch 1."""
    import torch

    import torchwatch as tw

    rank = start_group(tmp)
    run = tw.init(logdir=f"{tmp}/runs", model=torch.nn.Linear(1, 1), progress=False)
    errors = []
    for epoch in range(2):
        try:
            with tw.phase("train", train=True, epoch=epoch):
                tw.log(loss=torch.tensor(1.0 + rank))
                if rank == 1 and epoch == 0:
                    raise ValueError("skip this epoch")
        except Exception as error:
            errors.append({"type": type(error).__name__, "text": str(error)})
            if not isinstance(error, ValueError):
                break
    return {"errors": errors, "history": len(run.history)}


def scenario_spawn_style(tmp):
    """tw.init with no RANK and no process group yet, as under mp.spawn; the group comes later."""
    import torchwatch as tw

    rank_env = os.environ.pop("RANK")
    run = tw.init(logdir=f"{tmp}/runs", progress=False)
    rank_at_init = run.rank
    os.environ["RANK"] = rank_env  # only for start_group's own bookkeeping
    rank = start_group(tmp)
    with tw.phase("val") as p:
        tw.log(loss=float(rank))
    has_writer = run.writer("val") is not None
    tw.close()
    return {"rank_at_init": rank_at_init, "metrics": p.metrics, "has_writer": has_writer}


SCENARIOS = {"spawn_style": scenario_spawn_style, "loop": scenario_loop, "raise_and_exit": scenario_raise_and_exit,
             "raise_and_stay": lambda tmp: scenario_raise_and_exit(tmp, stay=True),
             "raise_and_go_on": scenario_raise_and_go_on}


def worker(scenario, tmp):
    import torch

    torch.set_num_threads(1)
    try:
        result = SCENARIOS[scenario](tmp)
    except BaseException:
        result = {"crashed": traceback.format_exc()}
    rank = int(os.environ["RANK"])
    path = Path(tmp) / f"result_{rank}.json"
    path.with_suffix(".tmp").write_text(json.dumps(result))
    os.replace(path.with_suffix(".tmp"), path)


# -- the tests -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_loop")
    results, outs, errs = launch("loop", tmp)
    for rank, result in enumerate(results):
        assert "crashed" not in result, f"rank {rank}:\n{result['crashed']}\n{errs[rank]}"
    return {"results": results, "outs": outs, "errs": errs, "tmp": tmp}


def expected_epoch_means(loop):
    """Per epoch: the global weighted mean of batch_loss and the mean of the returned losses."""
    results = loop["results"]
    per_epoch = []
    for epoch in range(2):
        pairs = [pair for r in results for pair in r["steps"][3 * epoch:3 * epoch + 3]]
        batch_loss = sum(v * n for v, n in pairs) / sum(n for _, n in pairs)
        returned = sum(r["returned"][epoch] for r in results) / WORLD
        per_epoch.append((batch_loss, returned))
    return per_epoch


def test_ranks_agree_on_where_they_are(loop):
    """tw.init before init_process_group takes the rank from RANK; gloo collectives use the CPU."""
    assert [r["rank_at_init"] for r in loop["results"]] == [0, 1]
    assert [r["device"] for r in loop["results"]] == ["cpu", "cpu"]


def test_reduced_values_are_the_global_means_on_every_rank(loop):
    """p.metrics and run.history hold, on every rank, the global weighted means over both ranks."""
    expected = expected_epoch_means(loop)
    for result in loop["results"]:
        train = [h for h in result["history"] if h["phase"] == "train"]
        assert [h["epoch"] for h in train] == [0, 1]
        for h, (batch_loss, returned) in zip(train, expected):
            assert h["metrics"]["batch_loss"] == pytest.approx(batch_loss, rel=1e-6)
            assert h["metrics"]["loss"] == pytest.approx(returned, rel=1e-6)
            assert h["samples"] == 10 + 11  # summed over the ranks, uneven last batches included
            assert h["steps"] == 3
        # val: acc 0.5 with weight 1 on rank 0, 0.75 with weight 2 on rank 1
        assert result["val"] == {"acc": pytest.approx((0.5 + 2 * 0.75) / 3)}
    # the ranks' losses differ, so a rank-local mean could not pass the checks above
    rank0 = loop["results"][0]["steps"][:3]
    assert sum(v * n for v, n in rank0) / 10 != pytest.approx(expected[0][0], rel=1e-3)


def test_history_is_identical_on_every_rank(loop):
    """Each reduced record, times included, is identical on both ranks; reduce=False ones differ."""
    histories = [[h for h in r["history"] if h["phase"] != "test"] for r in loop["results"]]
    assert histories[0] == histories[1]
    assert [h["phase"] for h in histories[0]] == [
        "train", "val", "train", "val", "probe", "wide", "wider", "edge", "spiky"]
    zero, one = loop["results"]
    assert [h["phase"] for h in zero["history"]].count("test") == 2
    assert [h["phase"] for h in one["history"]].count("test") == 0
    assert zero["test"] == {"acc": 0.125}  # rank 0's own value, and no hang on either rank


def test_time_and_data_wait_are_the_slowest_ranks(loop, scalars):
    """Phase time is the slowest rank's, samples add up, steps are the most any rank made."""
    zero, one = loop["results"]
    probe = next(h for h in zero["history"] if h["phase"] == "probe")
    assert zero["probe_own_s"] < 0.2 <= 0.45 <= probe["time_s"]  # rank 1 waited 3 x 0.15 s
    assert probe["samples"] == 2 * 5 + 3 * 4
    assert probe["steps"] == 3
    tags = scalars(loop["tmp"] / "runs" / "probe")
    assert tags["epoch/time_s"][0][1] == pytest.approx(probe["time_s"], rel=1e-6)
    assert tags["epoch/samples_per_s"][0][1] == pytest.approx(22 / probe["time_s"], rel=1e-5)
    assert tags["epoch/data_wait_frac"][0][1] > 0.7  # rank 1's share, not rank 0's (about 0)


def test_metric_logged_by_one_rank_is_unioned_with_a_warning(loop):
    """A metric only rank 1 logs is kept (its own mean) on both ranks; rank 0 warns, naming it."""
    for result in loop["results"]:
        # rank 0: two steps of common=1 weighted 1; rank 1: three steps of common=2 weighted 2
        assert result["probe"] == {"common": pytest.approx((2 * 1 * 1 + 3 * 2 * 2) / (2 + 6)),
                                   "extra": pytest.approx(7.0)}
    zero, one = loop["results"]
    partial = [w for w in zero["warnings"] if "only some ranks" in w]
    assert len(partial) == 1 and "'extra' (rank 1)" in partial[0] and "common" not in partial[0]
    assert one["warnings"] == []  # the job-level warning is said once, by rank 0


def test_warnings_come_from_rank_zero_only_and_cover_the_other_ranks_nans(loop):
    """Only rank 0 warns, as only it prints: the bad value every rank logs is reported once, and a
    NaN that only rank 1 logged is reported by rank 0 after the phase's reduction."""
    zero, one = loop["results"]
    assert one["ours"] == []
    notes = [w for w in zero["ours"] if "'note'" in w]
    assert len(notes) == 1 and "skipped metric 'note' logged in phase 'spiky'" in notes[0]
    spikes = [w for w in zero["ours"] if "'spike'" in w]
    assert len(spikes) == 1 and "NaN or Inf first in a step of another rank" in spikes[0]
    assert "spike" not in loop["errs"][1] and "torchwatch" not in loop["errs"][1]


def test_many_metrics_are_reduced_exactly_in_one_exchange(loop):
    """Forty metrics, the same names on both ranks, are all reduced exactly by the fixed-size
    exchange alone; only a phase with more than MAX_PACKED metrics takes the second exchange
    (one all_gather_object per rank), still exact and without a warning."""
    for result in loop["results"]:
        assert result["wide"] == {
            f"m{i:02d}": pytest.approx((i * 1 + (i + 1) * 2) / 3) for i in range(40)
        }
        assert result["wider"] == [[0.5], 257]  # the mean of rank 0's 0.0 and rank 1's 1.0
        assert result["object_exchanges"] == 1  # the "wider" phase's, not the "wide" one's
    assert not [w for w in loop["results"][0]["warnings"] if "wide" in w]


def test_opposite_infinities_on_two_ranks_reduce_to_nan(loop):
    """inf on one rank and -inf on the other give NaN on both, and the other metrics are intact."""
    for result in loop["results"]:
        assert result["edge"] == {"fine": "1.0", "inf": "nan"}


def test_only_rank_zero_writes_event_files_with_the_reduced_values(loop, scalars):
    """Exactly one event file per phase, all written by rank 0, holding the reduced values."""
    runs = loop["tmp"] / "runs"
    files = sorted(p for p in runs.rglob("events.out.tfevents.*"))
    pid0, pid1 = (r["pid"] for r in loop["results"])
    assert files and all(f".{pid0}." in f.name for f in files)
    assert not any(f".{pid1}." in f.name for f in files)
    folders = [f.parent.name for f in files if f.parent != runs]
    assert sorted(folders) == ["edge", "probe", "spiky", "test", "train", "val", "wide",
                               "wider"]
    train = scalars(runs / "train")
    expected = expected_epoch_means(loop)
    assert [s for s, _ in train["epoch/batch_loss"]] == [0, 1]
    for (_, value), (batch_loss, _) in zip(train["epoch/batch_loss"], expected):
        assert value == pytest.approx(batch_loss, rel=1e-6)
    for (_, value), (_, returned) in zip(train["epoch/loss"], expected):
        assert value == pytest.approx(returned, rel=1e-6)
    assert train["epoch/samples_per_s"][0][1] == pytest.approx(
        21 / next(h for h in loop["results"][0]["history"] if h["phase"] == "train")["time_s"],
        rel=1e-5)


def test_epoch_lines_are_printed_once_by_rank_zero(loop):
    """Rank 0 prints each phase line once; rank 1 prints nothing."""
    zero, one = loop["outs"]
    assert zero.count("Epoch [1/2] train") == 1 and zero.count("Epoch [2/2] train") == 1
    assert zero.count("Epoch [1/2] val") == 1 and zero.count("Epoch [2/2] test") == 1
    assert one == ""


def test_ddp_wrapped_model_modes_reach_the_wrapped_module(loop):
    """Train and eval phases toggle the module inside DDP, and every flag is restored after."""
    for result in loop["results"]:
        assert result["modes"]["train"] == [True, True, True]
        assert result["modes"]["val"] == [False, False, False]
        assert result["modes"]["after_val"] == [True, True, True]


@pytest.mark.parametrize("scenario", ["raise_and_exit", "raise_and_stay"])
def test_exception_on_one_rank_runs_no_collective_and_the_other_fails_not_hangs(
        scenario, tmp_path):
    """The raising rank's phase runs no reduction and re-raises as is; the other rank's reduction
    fails with torchwatch's explanation, at once when the raising process ends, or at the
    process group's timeout while it lives on, instead of hanging."""
    (zero, one), outs, errs = launch(scenario, tmp_path)
    assert one["error"]["type"] == "ValueError" and one["error"]["text"] == "boom on rank 1"
    assert one["history"] == 0 and one["training_after"] is True
    assert zero["error"] is not None, "rank 0's reduction completed: rank 1 must have joined it"
    # a note on the collective's error; before Python 3.11 (no add_note), a warning on stderr
    notes = zero["error"]["notes"] if sys.version_info >= (3, 11) else [errs[0]]
    assert any("reduction at the end of phase 'train' did not complete" in n for n in notes)
    limit = SHORT_PG_TIMEOUT_S if scenario == "raise_and_stay" else PG_TIMEOUT_S
    assert zero["seconds"] < limit + 5
    assert zero["history"] == 0 and zero["training_after"] is True
    assert outs == ["", ""]  # rank 0's phase wrote no line; rank 1 prints nothing


def test_ranks_ending_different_phases_raise_instead_of_mixing_them(tmp_path):
    """A rank that swallowed an exception and went on makes every rank raise at the next reduction,
    naming the phases, instead of averaging epoch 0 of one rank with epoch 1 of the other."""
    (zero, one), outs, errs = launch("raise_and_go_on", tmp_path)
    assert one["errors"][0] == {"type": "ValueError", "text": "skip this epoch"}
    for result in (zero, one):
        mismatch = result["errors"][-1]
        assert mismatch["type"] == "RuntimeError"
        assert "rank 0 phase 'train' epoch 0; rank 1 phase 'train' epoch 1" in mismatch["text"]
        assert result["history"] == 0
    assert outs == ["", ""]  # neither phase end wrote a line


def test_torchrun_example_prints_each_line_once_and_writes_one_set_of_event_files(tmp_path):
    """examples/ddp_train.py under `torchrun --nproc_per_node=2` prints one line per phase and
    epoch and leaves one event file per phase, all from one process."""
    example = Path(__file__).resolve().parent.parent / "examples" / "ddp_train.py"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHWATCH_DISABLE")}
    env["CI"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc_per_node=2", str(example), "--epochs", "2", "--logdir",
             str(tmp_path / "runs")],
            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=HARD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as timeout:  # run() has killed torchrun already
        pytest.fail(f"torchrun hung past {HARD_TIMEOUT_S}s:\n{timeout.stderr}")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("Epoch")]
    assert [line.split("  ")[0] for line in lines] == [
        f"Epoch [{e}/2] {phase}" for e in (1, 2) for phase in ("train", "val", "sample")
    ]
    files = sorted((tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert sorted(f.parent.name for f in files) == ["sample", "train", "val"]
    assert len({f.name.split(".")[-2] for f in files}) == 1  # one writer process (the pid)


def test_rank_from_environment_gates_sinks_before_any_process_group(tmp_path, monkeypatch, capsys):
    """With RANK=1 and no process group, a run has no writer, prints nothing, shows no bar and
    creates no logdir; its phases still record their own (unreduced) values."""
    import torch

    import torchwatch as tw

    monkeypatch.setenv("RANK", "1")
    logdir = tmp_path / "runs"
    run = tw.init(logdir=str(logdir), progress=True)
    with tw.phase("val", model=torch.nn.Linear(1, 1)) as p:
        for _ in tw.steps(range(3)):
            tw.log(acc=0.5)
    tw.close()
    assert run.rank == 1 and run.writer("val") is None and run.bar_wanted() is False
    assert p.metrics == {"acc": 0.5}
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert not logdir.exists()


def test_rank_settles_at_the_first_phase_when_init_came_before_the_group(tmp_path):
    """Started like mp.spawn (no RANK at init), rank 1 still drops its sinks once the group is up."""
    results, outs, errs = launch("spawn_style", tmp_path)
    for rank, result in enumerate(results):
        assert "crashed" not in result, f"rank {rank}:\n{result['crashed']}"
    assert [r["rank_at_init"] for r in results] == [0, 0]
    assert [r["metrics"] for r in results] == [{"loss": 0.5}, {"loss": 0.5}]
    assert [r["has_writer"] for r in results] == [True, False]
    assert outs[0].count("Epoch [1] val  loss 0.5000") == 1 and outs[1] == ""
    assert len(list((tmp_path / "runs" / "val").glob("events.out.tfevents.*"))) == 1


def test_reduce_phase_outside_a_process_group_returns_its_inputs():
    """Without an initialised process group the reduction is a no-op that runs no collective."""
    from torchwatch.distributed import is_distributed, reduce_phase

    sums = {"loss": [3.0, 2.0, 0.0]}
    assert not is_distributed()
    assert reduce_phase(sums, 1.5, 8, 2, 0.25, "phase 'x'", key="k") == (sums, 1.5, 8, 2, 0.25)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
