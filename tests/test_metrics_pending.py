"""The per-event metrics held in plain numbers between flushes (epm/metrics.py, ``_Pending``): a flush leaves the
metrics exactly as one ``observe``/``inc`` per event would have, and nothing is held where nothing flushes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from epm import metrics

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Below, on and between the bounds, past the last finite one, and zero.
AMOUNTS = [0.0, 0.001, 0.005, 0.0050001, 0.01, 0.02, 0.05, 0.3, 1.0, 2.5, 9.99, 10.0, 10.5, 400.0, 0.004, 0.005]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect() for sample in family.samples}


def pair() -> tuple[CollectorRegistry, Histogram, Counter]:
    registry = CollectorRegistry()
    histogram = Histogram("latency_seconds", "h", buckets=BUCKETS, registry=registry)
    counter = Counter("published_total", "c", ["job_type"], registry=registry)
    return registry, histogram, counter


def test_a_flush_leaves_the_metrics_as_one_observation_per_event_would():
    direct_registry, direct_histogram, direct_counter = pair()
    held_registry, held_histogram, held_counter = pair()
    pending = metrics._Pending(held_histogram)
    pending.batching = True
    children = {job_type: held_counter.labels(job_type) for job_type in ["demo", "program"]}
    empty = samples(held_registry)

    for amount in AMOUNTS:
        direct_histogram.observe(amount)
        pending.observe(amount)
    for job_type in ["demo", "program", "demo"]:
        direct_counter.labels(job_type).inc()
        pending.count_published(children[job_type])
    assert samples(held_registry) == empty, "held until the flush"

    pending.flush()
    assert samples(held_registry) == samples(direct_registry)
    assert samples(held_registry)[("latency_seconds_count", ())] == len(AMOUNTS)

    pending.flush()  # nothing held: nothing added twice
    assert samples(held_registry) == samples(direct_registry)
    direct_histogram.observe(0.03)
    pending.observe(0.03)
    pending.flush()
    assert samples(held_registry) == samples(direct_registry)


def test_without_a_flushing_loop_every_increment_goes_straight_to_its_metric():
    registry, histogram, counter = pair()
    pending = metrics._Pending(histogram)
    assert not pending.batching
    pending.observe(0.02)
    pending.count_published(counter.labels("demo"))
    found = samples(registry)
    assert found[("latency_seconds_count", ())] == 1 and found[("latency_seconds_bucket", (("le", "0.025"),))] == 1
    assert found[("published_total", (("job_type", "demo"),))] == 1


def test_the_process_metrics_hold_nothing_unless_a_worker_loop_flushes_them():
    # The tests' apps, the CLI and ``flask run`` never start the loop monitor, which turns batching on.
    assert metrics._pending.batching is False
    assert metrics._pending.bounds == list(metrics.DELIVERY_LATENCY._upper_bounds)
