"""Amber relaxation (`pipeline.relax`) on AlphaFold's own relax test structures, checking what
AlphaFold's relax tests check (relax_test.py, amber_minimize_test.py), and the numpy violation
check (`pipeline.relax_violations`) against AlphaFold's JAX one (tests/data/relax/SOURCE.md).

Hydrogen placement by PDBFixer/OpenMM is not deterministic (in AlphaFold either), so energies and
coordinates are checked through inequalities and bounds, never exact values."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from model import residue_constants as rc
from pipeline import relax, relax_violations
from pipeline.errors import InputError

DATA = Path(__file__).resolve().parents[1] / "data" / "relax"
AF_VIOLATIONS = json.loads((DATA / "af_violations.json").read_text())
OXT = rc.atom_order["OXT"]


def read(name: str) -> str:
    return (DATA / f"{name}.pdb").read_text()


def needs_openmm():
    pytest.importorskip("openmm", reason="openmm not installed (pip install 'fastfold[relax]')")
    pytest.importorskip("pdbfixer", reason="pdbfixer not installed (pip install 'fastfold[relax]')")


def atom_lines(pdb: str):
    return [l for l in pdb.splitlines() if l.startswith(("ATOM  ", "HETATM"))]


def check_same_protein_and_b_factors(pdb_in: str, pdb_out: str):
    """AlphaFold's relax_test checks: aatype, residue numbers, heavy-atom set (OXT aside) and
    B-factors unchanged; and every output atom, hydrogens included, carries its residue's B-factor."""
    a, b = relax.parse_pdb_atom37(pdb_in), relax.parse_pdb_atom37(pdb_out)
    np.testing.assert_array_equal(a["aatype"], b["aatype"])
    np.testing.assert_array_equal(a["residue_index"], b["residue_index"])
    assert a["chain_ids"] == b["chain_ids"]
    keep = np.arange(rc.atom_type_num) != OXT
    np.testing.assert_array_equal(a["atom_mask"][:, keep], b["atom_mask"][:, keep])
    np.testing.assert_allclose(a["b_factors"], b["b_factors"])
    by_residue = {}
    for line in atom_lines(pdb_out):
        by_residue.setdefault((line[21], int(line[22:26])), []).append(float(line[60:66]))
    assert len(by_residue) == len(a["aatype"])
    for (bf, values) in zip(a["b_factors"], by_residue.values()):
        assert values == [pytest.approx(bf, abs=0.005)] * len(values)
    return a, b


def heavy_rmsd(a, b) -> float:
    m = (a["atom_mask"] > 0) & (b["atom_mask"] > 0)
    return float(np.sqrt(np.mean(np.sum((a["atom_positions"][m] - b["atom_positions"][m]) ** 2, -1))))


def check_hydrogens(pdb_out: str):
    """As AlphaFold's relaxed PDBs: every residue carries hydrogens (placed by PDBFixer), every
    chain a terminal OXT."""
    h_by_residue = {}
    for line in atom_lines(pdb_out):
        key = (line[21], int(line[22:26]))
        h_by_residue[key] = h_by_residue.get(key, 0) + (line[76:78].strip() == "H")
    assert all(n > 0 for n in h_by_residue.values())
    return sum(h_by_residue.values())


# --------------------------------------------------------------------- violation check (numpy only)

@pytest.mark.parametrize("name", ["model_output", "with_violations", "with_violations_casp14",
                                  "multiple_disulfides_target"])
def test_violations_equal_alphafold(name):
    ref = AF_VIOLATIONS[name]
    v = relax.pdb_violations(read(name))
    assert v["residue_violations"].tolist() == ref["residue_violations"]
    assert v["num_residue_violations"] == len(ref["residue_violations"])
    between, within = v["between_residues"], v["within_residues"]
    assert np.flatnonzero(between["connections_per_residue_violation_mask"]).tolist() == ref["connection_violation_residues"]
    assert np.argwhere(between["clashes_per_atom_clash_mask"] > 0).tolist() == ref["clash_atoms"]
    assert np.argwhere(within["per_atom_violations"] > 0).tolist() == ref["within_residue_violation_atoms"]
    for key in ["violations_extreme_ca_ca_distance", "violations_between_residue_bond",
                "violations_between_residue_clash", "violations_within_residue", "violations_per_residue"]:
        assert v[key] == pytest.approx(ref[key], abs=1e-6), key
    for key in ["bonds_c_n_loss_mean", "angles_ca_c_n_loss_mean", "angles_c_n_ca_loss_mean", "clashes_mean_loss"]:
        assert between[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key
    assert between["clashes_per_atom_loss_sum"].sum() == pytest.approx(ref["clashes_per_atom_loss_sum_total"], rel=1e-4, abs=1e-5)
    assert within["per_atom_loss_sum"].sum() == pytest.approx(ref["within_per_atom_loss_sum_total"], rel=1e-4, abs=1e-5)


def test_find_violations_as_alphafold_test():
    """amber_minimize_test.test_find_violations, literally."""
    viols = relax.pdb_violations(read("multiple_disulfides_target"))
    expected_connection = np.zeros((191,), np.float32)
    expected_connection[[42, 43, 59, 60, 135, 136]] = 1.0
    clash_indices = np.array([
        [8, 4], [8, 5], [13, 3], [14, 1], [14, 4], [26, 4], [26, 5], [31, 8], [31, 10], [39, 0],
        [39, 1], [39, 2], [39, 3], [39, 4], [42, 5], [42, 6], [42, 7], [42, 8], [47, 7], [47, 8],
        [47, 9], [47, 10], [64, 4], [85, 5], [102, 4], [102, 5], [109, 13], [111, 5], [118, 6],
        [118, 7], [118, 8], [124, 4], [124, 5], [131, 5], [139, 7], [147, 4], [152, 7]])
    expected_clash = np.zeros([191, 14])
    expected_clash[clash_indices[:, 0], clash_indices[:, 1]] += 1
    np.testing.assert_array_equal(viols["between_residues"]["connections_per_residue_violation_mask"],
                                  expected_connection)
    np.testing.assert_array_equal(viols["between_residues"]["clashes_per_atom_clash_mask"], expected_clash)
    np.testing.assert_array_equal(viols["within_residues"]["per_atom_violations"], np.zeros([191, 14]))


def test_stereo_chemical_bounds_equal_alphafold():
    ref = AF_VIOLATIONS["make_atom14_dists_bounds(1.5, 12)"]
    b = relax_violations.make_atom14_dists_bounds(1.5, 12)
    up = b["upper_bound"]
    assert b["lower_bound"].astype(np.float64).sum() == pytest.approx(ref["lower_bound_sum"], rel=1e-6)
    assert up[up < 1e9].astype(np.float64).sum() == pytest.approx(ref["upper_bound_sum_below_1e9"], rel=1e-6)
    assert b["stddev"].astype(np.float64).sum() == pytest.approx(ref["stddev_sum"], rel=1e-6)
    assert int((up < 1e9).sum() - (up == 0).sum()) == ref["num_bonded_pairs"]
    bonds, virtual, angles = relax_violations.load_stereo_chemical_props()
    assert sum(map(len, bonds.values())) == 153 and sum(map(len, angles.values())) == 174
    assert set(bonds) == set(rc.resnames)


def test_parse_drops_hydrogens_and_reads_plddt():
    prot = relax.parse_pdb_atom37(read("model_output"))
    assert "".join(rc.restypes[a] for a in prot["aatype"]) == "MKFLV"
    assert prot["atom_mask"].sum() == 96 - 53  # 53 hydrogens in the file
    np.testing.assert_array_equal(prot["atom_mask"], rc.STANDARD_ATOM_MASK[prot["aatype"]])
    assert prot["b_factors"][0] == pytest.approx(4.39)


# -------------------------------------------------------------------------- relaxation (OpenMM)

@pytest.fixture(scope="module")
def relaxed_with_violations():
    """One real, unlimited relax (AlphaFold's defaults: max_iterations=0, 3 outer rounds)."""
    needs_openmm()
    return relax.relax_pdb(read("with_violations"))


def test_iterative_relax_resolves_violations(relaxed_with_violations):
    """amber_minimize_test.test_iterative_relax + relax_test.test_process checks on a full relax."""
    pdb_in = read("with_violations")
    pdb_out, debug = relaxed_with_violations
    assert debug["violations_before"] == len(AF_VIOLATIONS["with_violations"]["residue_violations"]) == 10
    assert debug["violations_after"] == debug["remaining_violations_count"] == 0
    assert debug["remaining_violations"] == [0] * 148
    assert relax.pdb_violations(pdb_out)["num_residue_violations"] == 0  # re-checked from the file
    assert debug["final_energy"] < debug["initial_energy"]
    assert 0 < debug["rmsd"] < 1.0
    assert 1 <= debug["outer_iterations"] <= 3 and debug["attempts"] >= 1
    a, b = check_same_protein_and_b_factors(pdb_in, pdb_out)
    assert heavy_rmsd(a, b) == pytest.approx(debug["heavy_atom_rmsd"])
    assert 0 < debug["heavy_atom_rmsd"] < 0.5
    assert b["atom_mask"][-1, OXT] == 1 and b["atom_mask"][:, OXT].sum() == 1
    assert b["atom_mask"].sum() == a["atom_mask"].sum() + 1
    assert check_hydrogens(pdb_out) > 1000
    json.dumps(debug)  # the lead writes it as relax metrics


def test_process_model_output():
    """relax_test.test_process: AlphaFold's test config (one L-BFGS step, one round)."""
    needs_openmm()
    pdb_in = read("model_output")
    pdb_out, debug = relax.relax_pdb(pdb_in, max_iterations=1, tolerance=2.39, stiffness=10.0,
                                     exclude_residues=[], max_outer_iterations=1, use_gpu=False)
    assert {"initial_energy", "final_energy", "attempts", "rmsd"} <= set(debug)
    assert debug["final_energy"] < debug["initial_energy"]
    assert debug["rmsd"] > 0
    assert debug["remaining_violations"] == [0] * 5
    a, b = check_same_protein_and_b_factors(pdb_in, pdb_out)
    assert heavy_rmsd(a, b) < 0.5
    check_hydrogens(pdb_out)


def test_unresolved_violations_casp14():
    """relax_test.test_unresolved_violations: one step, one round adds no violations."""
    needs_openmm()
    _, debug = relax.relax_pdb(read("with_violations_casp14"), max_iterations=1, max_outer_iterations=1)
    exp = np.array(
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
         0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1,
         1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
         0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
         0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
         0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0,
         0, 0, 0, 0])
    assert np.all(np.array(debug["remaining_violations"]) <= exp)
    assert debug["violations_before"] == 18 and debug["outer_iterations"] == 1


def test_multiple_disulfides_target():
    """amber_minimize_test.test_multiple_disulfides_target (10 steps, one attempt), plus: the
    disulfide bridges stay bonded and excluded residues are reported."""
    needs_openmm()
    pdb_in = read("multiple_disulfides_target")
    pdb_out, debug = relax.relax_pdb(pdb_in, max_iterations=10, max_attempts=1, stiffness=10.0,
                                     max_outer_iterations=1, exclude_residues=[0, 1])
    assert debug["attempts"] == 1 and debug["excluded_residues"] == [0, 1]
    assert debug["time_s"] > 0 and debug["platform"] == "CPU"
    a, b = check_same_protein_and_b_factors(pdb_in, pdb_out)
    assert heavy_rmsd(a, b) < 0.5

    def disulfides(p):
        cys = np.flatnonzero(p["aatype"] == rc.restype_order["C"])
        sg = p["atom_positions"][cys, rc.atom_order["SG"]]
        d = np.linalg.norm(sg[:, None] - sg[None], axis=-1)
        return {(int(cys[i]), int(cys[j])) for i, j in zip(*np.nonzero(d < 2.5)) if i < j}

    bridges = disulfides(a)
    assert len(bridges) >= 2 and disulfides(b) == bridges


def test_two_chains_keep_ids_numbers_and_termini():
    """Chain ids and residue numbers survive; each chain gets its own termini (OXT)."""
    needs_openmm()
    lines = []
    for l in read("model_output").splitlines():
        if l.startswith("ATOM") and int(l[22:26]) >= 3:
            l = l[:21] + "C" + f"{int(l[22:26]) + 40:>4}" + l[26:]
        lines.append(l)
    pdb_in = "\n".join(lines)
    pdb_out, debug = relax.relax_pdb(pdb_in, max_iterations=5, max_outer_iterations=1)
    a, b = check_same_protein_and_b_factors(pdb_in, pdb_out)
    assert b["chain_ids"] == ["A", "C"] and b["residue_index"].tolist() == [1, 2, 43, 44, 45]
    assert np.flatnonzero(b["atom_mask"][:, OXT]).tolist() == [1, 4]
    assert len(debug["remaining_violations"]) == 5


# ------------------------------------------------------------------------------------- errors

def test_incomplete_residue_is_refused():
    needs_openmm()
    lines = read("with_violations").splitlines()
    cut = [l for l in lines if not (l.startswith("ATOM") and int(l[22:26]) == 5 and l[12:16].strip() == "CB")]
    assert len(cut) == len(lines) - 1
    with pytest.raises(relax.RelaxError, match=r"^1 residue\(s\) do not hold exactly their heavy atoms .*missing CB"):
        relax.relax_pdb("\n".join(cut))


def test_nonstandard_and_single_residue_chain_are_refused():
    needs_openmm()
    pdb = read("model_output")
    with pytest.raises(relax.RelaxError, match="MSE .*20 standard amino acids"):
        relax.relax_pdb(pdb.replace("MET A   1", "MSE A   1"))
    lone = "\n".join(l[:21] + "B" + l[22:] if l.startswith("ATOM") and int(l[22:26]) == 5 else l
                     for l in pdb.splitlines())
    with pytest.raises(relax.RelaxError, match="chain B has a single residue"):
        relax.relax_pdb(lone)
    with pytest.raises(relax.RelaxError, match="no protein heavy atoms"):
        relax.relax_pdb("END\n")


def test_missing_cuda_platform_is_a_clear_error():
    needs_openmm()
    import openmm
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if "CUDA" in names:
        pytest.skip("this machine has OpenMM's CUDA platform")
    with pytest.raises(relax.RelaxError, match="no CUDA platform") as e:
        relax.relax_pdb(read("model_output"), max_iterations=1, use_gpu=True)
    assert "\n" not in str(e.value)


def test_missing_openmm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "openmm", None)  # makes `import openmm` raise ImportError
    with pytest.raises(relax.RelaxError, match=r"pip install 'fastfold\[relax\]'") as e:
        relax.relax_pdb(read("model_output"))
    assert isinstance(e.value, InputError) and isinstance(e.value, ValueError)
    assert "\n" not in str(e.value)
