"""The long jobs the window runs, without Qt: each is a generator the GUI's worker drives (checking Cancel between
yields) and a test can drive headless. One module per job:

- :mod:`core.jobs.generate`  a reverse-process run, its recording and exports (the Generate tab)
- :mod:`core.jobs.bound`     the variational bound of a model on images (the ELBO tab)
- :mod:`core.jobs.training`  training updates and the run folder (the Train tab)
- :mod:`core.jobs.chain`     the forward Markov chain walk x_0 → x_t by eq. 2 (the main view's chain mode)
- :mod:`core.jobs.pipelines` loading the one shared Stable Diffusion pipeline, stage by stage
"""
