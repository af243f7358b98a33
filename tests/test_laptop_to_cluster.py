"""Unit tests of scaling_ml.laptop_to_cluster (chapter 5): fast, real components only."""

import sys

import nbformat
import pytest
from dask_jobqueue import PBSCluster, SLURMCluster

from scaling_ml import cluster
from scaling_ml import laptop_to_cluster as ltc


def test_dask_backend_without_a_client():
    from distributed import default_client

    # First in this file: the module's client fixture is not started yet.
    with pytest.raises(ValueError):
        default_client()
    with pytest.raises(ltc.LaptopToClusterError, match="needs a connected Dask client"):
        ltc.newsgroups_grid_search(parameters={"clf__alpha": (1e-5,)})


@pytest.fixture(scope="module")
def client():
    client = cluster.get_client(n_workers=2)
    yield client
    client.close()


def test_grid_search_runs_on_the_dask_backend(client):
    search = ltc.newsgroups_grid_search(parameters={"clf__alpha": (1e-5,)}, cv=2)
    assert len(search.cv_results_["params"]) == 1
    assert 0.9 < search.best_score_ <= 1.0


def test_grid_search_is_reproducible(client):
    grid = {"tfidf__norm": ("l1", "l2")}
    first = ltc.best_result(ltc.newsgroups_grid_search(parameters=grid, cv=2))
    second = ltc.best_result(ltc.newsgroups_grid_search(parameters=grid, cv=2, backend=None))
    assert first == second


def test_the_grid_is_chapter_ones():
    assert ltc.PARAMETER_GRID == {"tfidf__use_idf": (True, False), "tfidf__norm": ("l1", "l2"),
                                  "clf__alpha": (1e-5, 1e-6)}
    steps = [type(step).__name__ for _, step in ltc.newsgroups_pipeline().steps]
    assert steps == ["HashingVectorizer", "TfidfTransformer", "SGDClassifier"]


@pytest.mark.parametrize("categories, message", [
    (["sci.space", "no.such.group"], "Unknown 20 Newsgroups categories"),
    ([], "categories is empty"),
    (["sci.space", "sci.space"], "at least two different"),
])
def test_bad_categories(categories, message):
    with pytest.raises(ltc.LaptopToClusterError, match=message):
        ltc.load_newsgroups(categories)


@pytest.mark.parametrize("grid", [{}, {"clf__alpha": ()}])
def test_empty_grid(grid):
    with pytest.raises(ltc.LaptopToClusterError, match="grid .* is empty"):
        ltc.newsgroups_grid_search(parameters=grid, backend=None)


@pytest.mark.parametrize("option", [{"n_workers": 0}, {"nthreads": "2"}, {"n_workers": True}])
def test_external_cluster_bad_sizes(option):
    with pytest.raises(ltc.LaptopToClusterError, match="whole number"):
        with ltc.external_cluster(**option):
            pass


def test_nbval_command_bad_notebooks(tmp_path):
    with pytest.raises(ltc.LaptopToClusterError, match="No notebooks"):
        ltc.nbval_command([])
    with pytest.raises(ltc.LaptopToClusterError, match="not found"):
        ltc.nbval_command([tmp_path / "missing.ipynb"])
    command = ltc.nbval_command(ltc.chapter_notebooks())
    assert "--nbval" in command and str(ltc.SANITIZE_FILE) in command


def test_chapter_notebooks_are_numbered():
    names = [path.name for path in ltc.chapter_notebooks()]
    assert "00_setup.ipynb" in names and names == sorted(names)


def test_slurm_options_and_job_scripts():
    with pytest.raises(ltc.LaptopToClusterError, match="cores"):
        ltc.slurm_cluster_options(cores=0)
    options = ltc.slurm_cluster_options(cores=4, memory="16GiB", walltime="02:00:00", queue="gpu")
    with SLURMCluster(**options) as slurm:
        script = "\n".join(ltc.job_script_lines(slurm.job_script()))
    assert "#SBATCH -p gpu" in script and "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --mem=16G" in script and "#SBATCH -t 02:00:00" in script
    assert sys.executable not in script and "tcp://SCHEDULER:PORT" in script
    with PBSCluster(**ltc.slurm_cluster_options()) as pbs:
        script = "\n".join(ltc.job_script_lines(pbs.job_script()))
    assert "#PBS -l select=1:ncpus=1:mem=2048MB" in script


def test_scale_up_knobs(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Scale up: not in a code cell"),
        nbformat.v4.new_code_cell("x = 1\n# Scale up: use all 20 categories\n# on a cluster.\n"
                                  "categories = ['a', 'b']\n"
                                  "N = 10  # Scale up: 1000\n"),
    ]
    path = tmp_path / "01_demo.ipynb"
    nbformat.write(notebook, path)
    assert ltc.scale_up_knobs([path]) == [{
        "chapter": "01_demo", "knob": "categories = ['a', 'b']",
        "on a real cluster": "use all 20 categories on a cluster.",
    }, {"chapter": "01_demo", "knob": "N = 10", "on a real cluster": "1000"}]


def test_live_processes_finds_this_python():
    import os

    name = open(f"/proc/{os.getpid()}/comm").read().strip()
    assert os.getpid() in ltc.live_processes(name)
    assert ltc.live_processes("no-such-daemon-ch5") == []
