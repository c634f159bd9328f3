"""The CI-sized soak (200 Poisson arrivals over about 1,000 steps; `scripts/soak.py` runs 2,000 over 10,000):
budgets hold at every step, memory plateaus, waits stay bounded, outputs equal the no-drafter engine."""

from soak_harness import arrivals, csd_engine, drive, growth, plain_engine, soak_target

DRAFTER_KV_MB, TARGET_KV_MB = 0.25, 2.0
MIB = 2**20


def test_soak_under_tight_budgets():
    target = soak_target()
    schedule = arrivals(200, 1000, seed=1)
    csd = drive(csd_engine(target, DRAFTER_KV_MB, TARGET_KV_MB), schedule, sample_every=1)
    plain = drive(plain_engine(target, TARGET_KV_MB), schedule)
    assert len(csd.outputs) == 200 and csd.outputs == plain.outputs
    assert max(csd.target_kv) <= TARGET_KV_MB * MIB
    assert max(csd.drafter_kv) <= DRAFTER_KV_MB * MIB
    assert growth(csd.target_kv) <= 0.25 * TARGET_KV_MB * MIB  # no creep in the buffers
    assert growth(csd.rss) < 16 * MIB, f"RSS grew {growth(csd.rss) / MIB:.1f} MiB from the 2nd to the 4th quarter"
    assert max(csd.waits.values()) <= 64, sorted(csd.waits.values())[-5:]
    assert len(csd.waits) == 200
