"""Counters the engine keeps: per reviewer/drafter pair and per draft position proposals and
acceptances, drafter calls and their time, forwards, speculation-off steps and the current k."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class PairStats:
    """Draft tokens one drafter proposed to one reviewer, and how many the reviewer accepted."""

    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


@dataclass
class EngineStats:
    """Cumulative counters (never decrease). Keys: `pairs[(reviewer, drafter)]`,
    `positions[(reviewer, p)]` for 0-based position p of a reviewer's draft, `drafts[reviewer]`
    (rows that got a non-empty draft), `calls[drafter]` / `call_seconds[drafter]` (propose calls
    and their wall time, nested drafting included), `current_k[reviewer][drafter]`, `drafter_faults["drafter:kind"]`,
    `strategy_faults[hook]`."""

    target_forwards: int = 0
    generated_tokens: int = 0
    steps: int = 0
    speculation_off_steps: int = 0
    step_seconds: float = 0.0
    target_seconds: float = 0.0
    drafter_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    drafter_forwards: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    pairs: dict[tuple[str, str], PairStats] = field(default_factory=lambda: defaultdict(PairStats))
    positions: dict[tuple[str, int], PairStats] = field(default_factory=lambda: defaultdict(PairStats))
    drafts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    call_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    current_k: dict[str, dict[str, int]] = field(default_factory=dict)
    #: proposals that broke the drafting contract, by "drafter:kind" (rows, length, id, probs)
    drafter_faults: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: host hooks that failed inside TGI (raised, or broke the [B, S] contract), by hook; each cost the batch
    #: one step of speculation
    strategy_faults: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: requests that joined, by their speculation profile (auto, off, or a configured profile)
    profile_requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: the target's draft tokens by (profile, drafter): proposed and accepted
    profile_pairs: dict[tuple[str, str], PairStats] = field(default_factory=lambda: defaultdict(PairStats))
    #: MaG's drafted rows by (drafter, source): own history, the store of recent requests, bigram, none
    draft_sources: dict[tuple[str, str], int] = field(default_factory=dict)
    #: MaG's store of recent requests: charged bytes and sequences held, by drafter
    store_bytes: dict[str, int] = field(default_factory=dict)
    store_sequences: dict[str, int] = field(default_factory=dict)
    drafter_weight_bytes: dict[str, int] = field(default_factory=dict)
    drafter_kv_bytes: dict[str, int] = field(default_factory=dict)
    drafter_kv_peak_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def tokens_per_target_forward(self) -> float:
        """Generated tokens per target forward, prefill forwards included."""
        return self.generated_tokens / self.target_forwards if self.target_forwards else 0.0

    @property
    def overhead_seconds(self) -> float:
        """Step time spent outside model forwards (drafting logic, verification, bookkeeping)."""
        return self.step_seconds - self.target_seconds - sum(self.drafter_seconds.values())

    def as_dict(self) -> dict:
        return {
            "target_forwards": self.target_forwards,
            "generated_tokens": self.generated_tokens,
            "tokens_per_target_forward": round(self.tokens_per_target_forward, 3),
            "steps": self.steps,
            "speculation_off_steps": self.speculation_off_steps,
            "current_k": {reviewer: dict(ks) for reviewer, ks in self.current_k.items()},
            "seconds": {
                "steps": round(self.step_seconds, 4),
                "target_forwards": round(self.target_seconds, 4),
                "drafters": {k: round(v, 4) for k, v in self.drafter_seconds.items()},
                "overhead": round(self.overhead_seconds, 4),
            },
            "drafter_forwards": dict(self.drafter_forwards),
            "drafter_weight_mib": {name: round(n / 2**20, 3) for name, n in self.drafter_weight_bytes.items()},
            "drafter_kv_mib": {
                name: {"now": round(n / 2**20, 3), "peak": round(self.drafter_kv_peak_bytes[name] / 2**20, 3)}
                for name, n in self.drafter_kv_bytes.items()
            },
            "drafts": {
                f"{drafter}->{reviewer}": {
                    "proposed": s.proposed,
                    "accepted": s.accepted,
                    "acceptance": round(s.acceptance, 3),
                }
                for (reviewer, drafter), s in self.pairs.items()
            },
            "positions": {
                f"{reviewer}[{p}]": {"proposed": s.proposed, "accepted": s.accepted}
                for (reviewer, p), s in sorted(self.positions.items())
            },
            "profiles": {
                profile: {"requests": n, "drafts": {drafter: {"proposed": pair.proposed, "accepted": pair.accepted}
                                                    for (name, drafter), pair in self.profile_pairs.items()
                                                    if name == profile}}
                for profile, n in self.profile_requests.items()
            },
            "draft_sources": {f"{drafter}:{source}": n for (drafter, source), n in self.draft_sources.items()},
            "store": {name: {"mib": round(n / 2**20, 3), "sequences": self.store_sequences.get(name, 0)}
                      for name, n in self.store_bytes.items()},
            "drafter_faults": dict(self.drafter_faults),
            "strategy_faults": dict(self.strategy_faults),
            "drafter_calls": {name: {"calls": n, "seconds": round(self.call_seconds[name], 4)}
                              for name, n in self.calls.items()},
        }
