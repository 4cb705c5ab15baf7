"""Status files: a campaign as it stands while it runs, for ``ftplan replan``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ftplan.schema.types import Float, Int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunStatus(_Strict):
    """One run of the plan as it stands at ``now_h``."""

    state: Literal["finished", "running", "failed", "pending"] = Field(
        description="finished; running (it goes on where it is); failed (it restarts from its checkpoint); "
        "pending (not started: planned afresh)"
    )
    progress: Float | None = Field(None, ge=0, le=1, description="share of the job trained so far (running)")
    tokens_done: Int | None = Field(None, ge=0, description="instead of progress: tokens trained so far")
    checkpointed: Float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of the job its last checkpoint holds (where a failed or moved run restarts)",
    )
    ended_h: Float | None = Field(None, ge=0, description="when it finished (hours; finished runs)")

    @model_validator(mode="after")
    def _one_progress(self) -> RunStatus:
        if self.progress is not None and self.tokens_done is not None:
            raise ValueError("progress and tokens_done both given; keep one of them")
        return self


class CampaignStatus(_Strict):
    """The campaign at a time ``now_h`` (hours since its plan's start): runs that finished, run, failed, and
    nodes lost. Runs not listed are taken to be on schedule. New or cancelled jobs, prices and deadlines
    are changed in the scenario file itself."""

    schema_version: Literal[1] = 1
    now_h: Float = Field(ge=0, description="the time now, in hours since the plan's start")
    runs: dict[str, RunStatus] = Field(default_factory=dict, description="run id → its state")
    nodes_lost: list[str] = Field(
        default_factory=list, description="nodes of owned or bought pools out of use from now (as the plan names them)"
    )
