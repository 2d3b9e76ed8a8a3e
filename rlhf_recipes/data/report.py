"""What happened to the rows: counts read, dropped per reason and kept, per step, and split sizes."""

import logging
from collections import Counter
from dataclasses import dataclass, field

logger = logging.getLogger("rlhf_recipes.data")

MAX_EXAMPLES = 5  # row indices remembered per drop reason, to point a user at the rows


@dataclass
class StepReport:
    """One step that can drop rows: a source's adaptation, the mix, a stage's projection."""

    step: str
    rows_in: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)

    def drop(self, reason: str, index: int) -> None:
        """Counts row `index` (position in this step's input) as dropped for `reason`."""
        self.dropped[reason] += 1
        indices = self.examples.setdefault(reason, [])
        if len(indices) < MAX_EXAMPLES:
            indices.append(index)

    @property
    def rows_out(self) -> int:
        return self.rows_in - sum(self.dropped.values())


@dataclass
class DataReport:
    """Everything `build_stage_dataset` did to the rows of one stage."""

    stage: str
    steps: list[StepReport] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)

    def step(self, name: str, rows_in: int) -> StepReport:
        """Starts and returns the report of a new step."""
        self.steps.append(StepReport(name, rows_in))
        return self.steps[-1]

    @property
    def dropped(self) -> Counter:
        """Dropped rows per reason, over all steps."""
        return sum((step.dropped for step in self.steps), Counter())

    def to_dict(self) -> dict:
        """A JSON-serialisable form, for run reports."""
        return {
            "stage": self.stage,
            "sizes": dict(self.sizes),
            "dropped": dict(self.dropped),
            "steps": [
                {
                    "step": step.step,
                    "rows_in": step.rows_in,
                    "rows_out": step.rows_out,
                    "dropped": dict(step.dropped),
                    "examples": step.examples,
                }
                for step in self.steps
            ],
        }

    def log(self) -> None:
        """Logs one line per step and the final sizes (warning level when rows were dropped)."""
        for step in self.steps:
            reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(step.dropped.items()))
            level = logging.WARNING if step.dropped else logging.INFO
            logger.log(
                level,
                "%s data, %s: %d rows in, %d kept, %d dropped%s",
                self.stage, step.step, step.rows_in, step.rows_out, step.rows_in - step.rows_out,
                f" ({reasons}; first rows: {step.examples})" if reasons else "",
            )
        logger.info("%s data: %s", self.stage, ", ".join(f"{name}={size}" for name, size in self.sizes.items()))
