"""EmInspector (Qian, Wu, Wei, Ding, Xiao, Xiang, Ma, Guo, "EmInspector: Combating Backdoor
Attacks in Federated Self-Supervised Learning Through Embedding Inspection", arXiv 2405.13080,
2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from strategies.inputs import takes
from strategies.result import AggregationResult, check_updates


def eminspector(
    updates: torch.Tensor, *, weights: torch.Tensor | None = None, embed
) -> AggregationResult:
    """EmInspector (Qian et al., arXiv 2405.13080, 2024), the rule of the authors' released
    code: the server embeds its m inspection inputs with every client's model w_global + Δ_i
    (``embed(Δ_i)`` → (m, D), L2-normalised here) and, for each input t,

        S_i(t) = Σ_j cos(e_i(t), e_j(t))        (j over all n clients, i included),
        vote_i(t) = +1 if S_i(t) ≥ mean_k S_k(t), else −1,
        malicious score M_i = Σ_t vote_i(t);    client i is flagged when M_i > 0,

    and the aggregate is the unweighted mean of the accepted updates (``weights`` validated,
    not used, as in that code). The premise (the paper's finding): backdoored local models
    embed an inspection input close to one another, benign ones more diversely, so the
    colluders' embeddings sum to higher similarities. It assumes several colluding
    attackers and honest models that differ among themselves; where the honest models are
    near-copies of the global model and the attackers' embeddings are not alike, the vote
    flags the honest clients instead — a property of the rule, reported, not corrected.
    ``info``: the malicious scores. Every client flagged (e.g. all S_i(t) tied): ValueError,
    the server keeps the global model for the round (the code keeps it too)."""
    check_updates(updates, weights)
    e = torch.stack([F.normalize(embed(u).to(torch.float64), dim=-1) for u in updates])  # (n, m, D)
    similarity = torch.einsum("imd,jmd->mi", e, e)  # S_i(t) as (m, n)
    votes = torch.where(similarity >= similarity.mean(dim=1, keepdim=True), 1, -1)
    score = votes.sum(dim=0)
    accepted = torch.nonzero(score <= 0).flatten().cpu()
    if len(accepted) == 0:
        raise ValueError(f"eminspector: every client has a positive malicious score {score.tolist()}; "
                         "the global model is kept this round")
    return AggregationResult(
        aggregate=updates[accepted.to(updates.device)].mean(dim=0),
        accepted=accepted,
        info={"malicious_score": score.tolist()},
    )


takes("embed")(eminspector)
