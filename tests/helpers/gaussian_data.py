"""Data x0 ~ N(mu, sig^2) per dimension, for which every quantity of a path has a closed form:
x_t ~ N(a_t mu, v_t) with v_t = a_t^2 sig^2 + s_t^2, E[x0 | x_t] = mu + a_t sig^2 / v_t (x_t - a_t mu),
score grad log p_t(x_t) = -(x_t - a_t mu) / v_t."""
MU, SIG = 1.5, 0.5


def _coef(path, t, x):
    t = t.reshape((-1,) + (1,) * (x.dim() - 1))
    return path.a[t].to(x.dtype), path.s[t].to(x.dtype)


def exact_x0_network(path, mu=MU, sig=SIG):
    """A `model(x, t, direction, y)` whose output is the exact E[x0 | x_t] (an x0-prediction network)."""
    def model(x, t, direction, y):
        a, s = _coef(path, t, x)
        return mu + a * sig**2 / (a * a * sig**2 + s * s) * (x - a * mu)
    return model


def exact_score(path, x, t, mu=MU, sig=SIG):
    a, s = _coef(path, t, x)
    return -(x - a * mu) / (a * a * sig**2 + s * s)
