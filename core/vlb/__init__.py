"""The variational bound of the notes (eq. 9–14): each term L_0 … L_T in bits per dimension, computed in batches
with progress a caller can show and cancel. See :mod:`core.vlb.bound` for which term is which and the conventions."""
from core.vlb.bound import (DEFAULT_BATCH_SIZE, VARIANCES, BoundProgress, BoundResult, compute_bound, log_variances,
                            noise_seed, prior_bits_per_dim, resolve_variance, variational_bound)
from core.vlb.likelihood import discretized_gaussian_log_likelihood, gaussian_log_likelihood, normal_kl

__all__ = ["DEFAULT_BATCH_SIZE", "VARIANCES", "BoundProgress", "BoundResult", "compute_bound", "log_variances",
           "noise_seed", "prior_bits_per_dim", "resolve_variance", "variational_bound",
           "discretized_gaussian_log_likelihood", "gaussian_log_likelihood", "normal_kl"]
