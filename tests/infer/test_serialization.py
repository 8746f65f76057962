import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Predictive

from pyroext.guides import GUIDES, make_guide
from pyroext.infer import load_guide, run_svi, save_guide


def model(x, y=None):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w, scale), obs=y)


@pytest.fixture
def data():
    x = torch.randn(30, 2)
    return x, x @ torch.tensor([2.0, -1.0]) + 0.3 * torch.randn(30)


def trained(name, data):
    guide = make_guide(name, model)
    run_svi(model, guide, *data, num_steps=40, progress=False, seed=0)
    return guide


def draws(guide, data, seed=7):
    # With the data: the MCMC-in-guide guides target the posterior, so they need it.
    pyro.set_rng_seed(seed)
    return Predictive(model, guide=guide, num_samples=50, return_sites=["w", "scale"])(*data)


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_fresh_guide_loads_saved_parameters(tmp_path, data, name):
    guide = trained(name, data)
    save_guide(guide, tmp_path / "guide.pt")
    expected = draws(guide, data)
    pyro.clear_param_store()
    fresh = make_guide(name, model)
    rng = torch.get_rng_state()
    load_guide(fresh, tmp_path / "guide.pt", *data)
    assert torch.equal(rng, torch.get_rng_state())  # loading draws no random numbers
    for key, value in guide.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    for site, value in draws(fresh, data).items():
        assert torch.equal(value, expected[site])


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_saving_leaves_live_guide_usable(tmp_path, data, name):
    guide = trained(name, data)
    model_before, before = guide.model, draws(guide, data)
    save_guide(guide, tmp_path / "guide.pt")
    assert guide.model is model_before
    for site, value in draws(guide, data).items():
        assert torch.equal(value, before[site])
    result = run_svi(model, guide, *data, num_steps=5, progress=False)
    assert result.num_steps == 5 and all(torch.isfinite(torch.tensor(result.losses)))


def test_loading_into_other_guide_class_is_refused(tmp_path, data):
    save_guide(trained("normal", data), tmp_path / "guide.pt")
    with pytest.raises(ValueError, match="AutoNormal guide, not a .*AutoDelta"):
        load_guide(make_guide("delta", model), tmp_path / "guide.pt", *data)


def test_unknown_guide_name_lists_valid_ones():
    with pytest.raises(ValueError, match="guide='flow' is unknown; valid guides: normal, "):
        make_guide("flow", model)


def test_damaged_or_foreign_guide_files_are_refused(tmp_path, data):
    path = tmp_path / "guide.pt"
    save_guide(trained("normal", data), path)
    content = bytearray(path.read_bytes())
    content[-20] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=f"path='{path}' is corrupt: .*sha256"):
        load_guide(make_guide("normal", model), path, *data)
    torch.save({"guide_class": "x", "state_dict": {}}, path)  # a plain torch.save file
    with pytest.raises(ValueError, match=f"path='{path}' is not a pyroext checkpoint: .*zip"):
        load_guide(make_guide("normal", model), path, *data)
    with pytest.raises(FileNotFoundError, match="save_guide writes it"):
        load_guide(make_guide("normal", model), tmp_path / "none.pt", *data)


def test_guide_of_another_model_is_refused_naming_the_file(tmp_path, data):
    save_guide(trained("normal", data), tmp_path / "guide.pt")
    pyro.clear_param_store()
    x, y = data
    wider = torch.cat([x, x], dim=1), y
    with pytest.raises(ValueError, match="path=.*guide.pt' does not fit this AutoNormal"):
        load_guide(make_guide("normal", model), tmp_path / "guide.pt", *wider)
