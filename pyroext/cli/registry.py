"""The fitting jobs behind ``pyroext fit <model>``: one line per model family of the zoo."""

__all__ = ["JOBS"]

from pyroext.jobs import Job
from pyroext.models.bnn import job as bnn
from pyroext.models.gmm import job as gmm
from pyroext.models.linear_regression import job as linear_regression
from pyroext.models.vae import job as vae

JOBS: dict[str, Job] = {
    job.name: job for job in sorted((bnn.JOB, gmm.JOB, linear_regression.JOB, vae.JOB))
}
