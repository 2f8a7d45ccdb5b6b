"""Measured-latency pruning: the target loop stops at the measured crossing, widths round to the fastest ones
the latency table knows, and the table is measured once per machine and kept."""
import pytest
import torch
from torch import nn

from prune.latency import FastWidths, LatencyGoal, LatencyTable, LayerShape, layer_shapes
from prune.pruner import prune_model
from shrink.bench import count_macs
from shrink.models import build_model

from test_pruner import EXAMPLE, IMAGE, trained_like


class StubMeter:
    """A 'measured' speed-up that grows as MACs fall, more slowly (as on a real CPU): MACs ratio ** 0.7."""

    def __init__(self, base):
        self.base_macs, self.calls = count_macs(base, EXAMPLE), 0

    def __call__(self, model):
        self.calls += 1
        return (self.base_macs / count_macs(model, EXAMPLE)) ** 0.7


def test_latency_target_stops_within_one_step_of_the_measured_crossing():
    model = trained_like(build_model("resnet20", num_classes=10, image_size=16))
    meter = StubMeter(model)
    result = prune_model(model, EXAMPLE, latency_speedup=1.6, latency_goal=LatencyGoal(meter, 1.6))
    assert result.latency_speedup >= 1.6 and result.latency_speedup == pytest.approx(meter(model))
    before = result.history[-2]["speedup"] ** 0.7  # what the stub would have said one step earlier
    assert before < 1.6
    assert result.speedup > 1.6  # the MACs speed-up overshoots: latency gains less than MACs do
    assert meter.calls - 1 < result.steps / 2  # far steps were predicted, not measured


def test_fast_timings_under_load_do_not_end_the_latency_loop_early():
    model = trained_like(build_model("resnet20", num_classes=10, image_size=16))
    meter, outlier = StubMeter(model), {"left": 2}

    def noisy(candidate):  # the first two timings near the target come out 50% too fast, as under load
        speedup = meter(candidate)
        if speedup > 1.3 and outlier["left"]:
            outlier["left"] -= 1
            return speedup * 1.5
        return speedup

    result = prune_model(model, EXAMPLE, latency_speedup=1.6, latency_goal=LatencyGoal(noisy, 1.6))
    assert outlier["left"] == 0  # both fast timings happened
    assert meter(model) >= 1.6 and result.history[-2]["speedup"] ** 0.7 < 1.6  # truly there, one step past
    assert "latency_speedup" in result.history[-1]


class StubTable:
    """Layer latency in proportion to MACs, except that widths that are multiples of 4 run twice as fast."""

    def ms(self, layers):
        return [i * o * (1 if i % 4 else 0.5) * (1 if o % 4 else 0.5) for _, i, o in layers]

    def save(self):
        pass


def test_fast_widths_round_each_group_to_the_fastest_nearby_width():
    model = trained_like(build_model("resnet20", num_classes=10, image_size=16))
    prune_model(model, EXAMPLE, speedup=1.5)
    before = {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert any(width % 4 for width in before.values())
    batch = torch.randn(2, *IMAGE)
    changed = FastWidths(EXAMPLE, "group-l2", table=StubTable())(model)
    after = {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert changed and all(after[name] == new < old for name, (old, new) in changed.items())
    window = {name: min(8, width // 4) for name, width in before.items()}  # at most a quarter of the channels
    # a multiple of 4 within reach is taken; otherwise the width stays (fewer channels alone are no faster here)
    assert all(width % 4 == 0 if before[name] % 4 < window[name] else width == before[name]
               for name, width in after.items())
    assert model(batch).shape == (2, 10) and model.fc.out_features == 10


def test_latency_table_measures_once_and_reloads_from_its_file(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 4))
    shapes = layer_shapes(model, EXAMPLE)
    conv = shapes[model[0]]
    assert conv == LayerShape("conv", (3, 3), (1, 1), (1, 1), 1, (16, 16)) and shapes[model[3]].kind == "linear"
    path = tmp_path / "table.json"
    table = LatencyTable(batch=2, threads=1, path=path, min_time_s=0.01)
    first = table.ms([(conv, 3, 8), (conv, 3, 6), (shapes[model[3]], 2048, 4)])
    assert all(value > 0 for value in first) and table.new == 3
    table.save()
    again = LatencyTable(batch=2, threads=1, path=path)
    assert again.ms([(conv, 3, 8), (conv, 3, 6), (shapes[model[3]], 2048, 4)]) == first and again.new == 0
    path.write_text("{not json")  # a damaged table is remeasured, not trusted
    assert LatencyTable(batch=2, threads=1, path=path).entries == {}
