"""`neurender serve`: the HTTP adapter over the job runner."""
