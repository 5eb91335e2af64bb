"""Predictions with uncertainty: the infinitely wide RNN as a Gaussian process, and the
mean and covariance of its ensemble trained by gradient descent.

An infinitely wide RNN at initialisation is a Gaussian process whose covariance is the
NNGP kernel ``K`` (spec section 3); trained by gradient flow on the squared loss it
stays linear in its parameters (spec section 5), so the trained network is a linear
function of the random initial one and its outputs over random initialisations are
again Gaussian, with a mean AND a covariance given in closed form by ``K`` and the NTK
``Theta`` together (Lee et al. 2019, "Wide neural networks of any depth evolve as
linear models under gradient descent", the "NTK-GP"). Both kernels come from one walk:
``gram(X, kind="both")``.

* :func:`nngp_posterior` -- exact Bayesian inference with the NNGP prior and Gaussian
  noise: mean and covariance (or its diagonal) at test sequences.
* :class:`GradientDescentEnsemble` / :func:`gradient_descent_ensemble` -- mean and
  covariance of the ensemble of networks trained for a time ``s`` (any number of times
  at once, ``np.inf`` included), training every parameter (the NTK) or only the
  read-out (the NNGP kernel is then the tangent kernel), with the ridge term of
  :class:`rntk_numba.analysis.GradientFlow`; one eigendecomposition.
* :func:`nngp_log_marginal_likelihood` and :func:`fit_output_scale_and_noise` -- the
  evidence, and its maximisation over the output scale and the noise level from one
  eigendecomposition of the training Gram.
* :class:`RNTKGaussianProcessRegressor` -- a scikit-learn regressor on sequences of any
  lengths with ``predict(X, return_std=True | return_cov=True)``, ``sample_y`` and the
  log marginal likelihood; :func:`evidence_search` chooses the RNTK hyperparameters by
  evidence instead of cross-validation.

Same sample (spec 3.2). The test-test kernel must be the symmetric ``gram(X_test)``
(or its diagonal, the self-kernels): a test sequence IS the same sample as itself, so
``sigma_h`` enters its variance, while two different test sequences are not.

Conventions of the gradient flow (as :class:`~rntk_numba.analysis.GradientFlow`): the
outputs follow ``df/ds = -lr [Theta (f - y) + ridge (f - f0)]``, i.e. gradient flow on
``1/2 ||f(X) - y||^2 + ridge/2 ||theta - theta_0||^2`` for a time ``s`` (``s = lr x``
the number of small gradient steps when ``lr = 1``).

Rooms: :mod:`.inference` (the closed forms) and :mod:`.regressor` (the estimator and
the evidence search).
"""

from .inference import (GradientDescentEnsemble, fit_output_scale_and_noise,
                        gradient_descent_ensemble, nngp_log_marginal_likelihood,
                        nngp_posterior)
from .regressor import POSTERIORS, RNTKGaussianProcessRegressor, evidence_search

__all__ = ["nngp_posterior", "GradientDescentEnsemble", "gradient_descent_ensemble",
           "nngp_log_marginal_likelihood", "fit_output_scale_and_noise",
           "RNTKGaussianProcessRegressor", "evidence_search", "POSTERIORS"]
