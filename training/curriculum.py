"""The three-stage curriculum as data, and the Stage II rebalancing rule.

Stages come from the run config (`stages:`), typically
    I   pre-training: all data, all tasks, joint generation weighted up;
    II  specialised post-training: the task mixture rebalanced from the evaluation at the end of
        stage I (`rebalance:`), so weak capabilities get more steps;
    III fine-tuning on a high-quality subset (`quality:` filter), lower learning rate.

Rebalancing rule. Each task k gets a shortfall b_k >= 0 relative to the best task:
    by validation_loss: L_k = validation loss per generated modality (total / #generated),
                        b_k = L_k / min_j L_j - 1
    by metrics:         m_k = mean of the task's quality metrics (higher is better, "task/name"
                        keys from the metrics callable), b_k = max_j m_j - m_k
and its configured weight w_k is scaled by a multiplier between `floor` and 1:
    w'_k = w_k * (floor + (1 - floor) * b_k / max_j b_j),   then normalised to sum 1.
The weakest task keeps its full weight, the strongest keeps `floor` of it, so no task drops out
(a task that is never trained collapses). Equal scores leave the weights unchanged.
"""
from __future__ import annotations

from apollo_core.tasks import Task

from .config import RebalanceConfig
from .tasks import normalise


def shortfalls(scores: dict[Task, float], *, higher_is_better: bool) -> dict[Task, float]:
    if not scores:
        raise ValueError("rebalancing needs at least one task score")
    if higher_is_better:
        best = max(scores.values())
        return {t: best - s for t, s in scores.items()}
    best = min(scores.values())
    if best <= 0:
        raise ValueError(f"validation losses must be positive to rebalance, got { {t.value: s for t, s in scores.items()} }")
    return {t: s / best - 1.0 for t, s in scores.items()}


def rebalance(base: dict[Task, float], shortfall: dict[Task, float], floor: float) -> dict[Task, float]:
    missing = [t.value for t in base if base[t] > 0 and t not in shortfall]
    if missing:
        raise ValueError(f"no evaluation score for task(s) {missing}; evaluate every task of the stage's mixture")
    worst = max((shortfall[t] for t in base if base[t] > 0), default=0.0)
    if worst <= 0:
        return normalise(base)
    return normalise({t: w * (floor + (1.0 - floor) * shortfall.get(t, 0.0) / worst) for t, w in base.items()})


def task_scores(rule: RebalanceConfig, evaluation: dict[str, float], tasks: list[Task]) -> dict[Task, float]:
    """Per-task scores out of an evaluation record (see training/evaluation.py for the keys)."""
    scores: dict[Task, float] = {}
    for task in tasks:
        if rule.by == "validation_loss":
            key = f"val/{task.value}/per_modality"
            if key in evaluation:
                scores[task] = evaluation[key]
        else:
            values = [v for k, v in evaluation.items() if k.startswith(f"metrics/{task.value}/")]
            if values:
                scores[task] = sum(values) / len(values)
    return scores


def stage_task_weights(base: dict[Task, float], rule: RebalanceConfig | None,
                       evaluation: dict[str, float] | None) -> dict[Task, float]:
    """The task mixture a stage trains with: configured, or rebalanced by `rule`."""
    if rule is None:
        return normalise(base)
    if not evaluation:
        raise ValueError("this stage rebalances from the previous stage's evaluation, but none was recorded; "
                         "configure eval.source (or eval.metrics for by: metrics)")
    scores = task_scores(rule, evaluation, [t for t, w in base.items() if w > 0])
    falls = shortfalls(scores, higher_is_better=rule.by == "metrics")
    return rebalance(base, falls, rule.floor)
