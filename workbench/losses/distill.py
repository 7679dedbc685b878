"""SimFLE's self-distillation loss (Moon, Jang, Park, TAFFC 2024) as pure functions.

Reference: ``jymoon0613/simfle`` ``model/loss.py`` ``DistillationLoss`` and ``engine_simfle.py``:
``t = sg(mean(p1_kd, p2_kd, part_kd))``; ``L_d = Σ_u T²·KL(softmax(t/T) ‖ softmax(u/T))`` with
``F.kl_div(log_softmax(u/T), softmax(t/T), reduction='batchmean')``, T = 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def kd_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """``T²·KL(softmax(teacher/T) ‖ softmax(student/T))`` summed over classes, averaged over rows
    ("batchmean"). The teacher is used as given (detach it yourself if it must not get gradients)."""
    s = student.float() if student.dtype in (torch.float16, torch.bfloat16) else student
    t = teacher.to(s.dtype)
    return F.kl_div(F.log_softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1),
                    reduction="batchmean") * temperature * temperature


def kd_to_mean(outputs: Sequence[torch.Tensor], temperature: float = 4.0) -> torch.Tensor:
    """Distil every output towards the detached mean of all of them (SimFLE's ``L_d``).

    ``outputs``: the D-projector outputs, each (N, K) — in SimFLE ``[p1_kd, p2_kd, part_kd]``.
    Zero when all outputs are equal. T = 4 in SimFLE; higher T transfers softer targets.
    """
    if len(outputs) < 2:
        raise ValueError("kd_to_mean needs at least two outputs")
    teacher = torch.stack([o.float() if o.dtype in (torch.float16, torch.bfloat16) else o
                           for o in outputs]).mean(0).detach()
    return sum((kd_kl(o, teacher, temperature) for o in outputs), torch.zeros((), device=teacher.device,
                                                                               dtype=teacher.dtype))
