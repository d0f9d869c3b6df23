"""M2's fused ops, one module per op, each showing all of the op's faces top to bottom: the plain-torch
face (the `torch` backend), the input checks, the custom ops' fakes, the one autograd formula every
compiled backend shares, the table of implementations by backend (kernels in ssvae_fast/cpu, cuda and
triton, one module per op there too), and the entry point `<op>(..., backend=...)`.

    class_conditional_activation   act(a + W_y[:, c]): the first layers on [v, onehot(c)]
    gaussian_reparam_kl            z = mu + exp(logvar / 2) eps and KL(q || N(0, I))
    bernoulli_loglik_linear        the decoder's output layer and the Bernoulli log-likelihood
    elbo_reduction                 the classifier-weighted ELBO reduction per example
"""
