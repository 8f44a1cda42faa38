import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainrule.data import load_array_file, load_csv, load_file
from chainrule.errors import DataError


def write(tmp_path, text, name="d.csv", mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_header_names_target_by_name_and_classification(tmp_path):
    p = write(tmp_path, "a,b,label\n1,2,cat\n3,4,dog\n5,6,cat\n")
    b = load_csv(p, target="label")
    assert b.task == "classification" and b.classes == ["cat", "dog"] and b.y.tolist() == [0, 1, 0]
    assert b.feature_names == ["a", "b"] and b.target_name == "label"
    assert b.x.dtype == np.float32 and b.x.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_no_header_target_by_index_semicolon_and_regression(tmp_path):
    p = write(tmp_path, "0.5;1;2.25\n1.5;3;4.75\n2.5;5;0.125\n")
    b = load_csv(p, target=0)
    assert b.task == "regression" and b.y.ravel().tolist() == [0.5, 1.5, 2.5]
    assert b.x.tolist() == [[1, 2.25], [3, 4.75], [5, 0.125]]
    b = load_csv(p, target="2", delimiter=";")
    assert b.task == "regression" and b.x.shape == (3, 2)


def test_integer_target_inferred_classification_overridable(tmp_path):
    p = write(tmp_path, "x,y\n1,0\n2,1\n3,2\n4,1\n")
    assert load_csv(p).task == "classification"
    b = load_csv(p, task="regression")
    assert b.task == "regression" and b.y.shape == (4, 1)


def test_tab_and_blank_lines_and_bom(tmp_path):
    p = write(tmp_path, "\ufeffa\tb\ty\n1\t2\t0\n\n3\t4\t1\n")
    b = load_csv(p)
    assert b.x.shape == (2, 2) and b.feature_names == ["a", "b"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("\n\n  \n", "empty"),
        ("a,b,y\n", "no data rows"),
        ("a,b,y\n1,2,0\n3,,1\n", r"row 3, column 2 \('b'\): missing value"),
        ("a,b,y\n1,2,0\n3,NA,1\n", r"row 3, column 2 \('b'\): missing value"),
        ("a,b,y\n1,2,0\n3,x7,1\n", r"row 3, column 2 \('b'\): not a number: 'x7'"),
        ("a,b,y\n1,2,0\n3,inf,1\n", r"row 3, column 2.*not a finite"),
        ("a,b,y\n1,2,0\n3,4\n", "row 3 has 2 fields, expected 3"),
        ("a,b,y\n1,2,0\n3,4,\n", r"row 3, column 3 \('y'\): missing target"),
        ("1,2,0.5\n3,4,abc\n", "row 2, column 3: regression target 'abc'"),
    ],
)
def test_errors_name_file_row_column(tmp_path, text, match):
    p = write(tmp_path, text)
    task = "regression" if "abc" in text else None
    with pytest.raises(DataError, match=match) as e:
        load_csv(p, task=task)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("bad", ["inf", "abc", "1,5"])
def test_numeric_target_with_one_odd_cell_is_an_error_not_text_classes(tmp_path, bad):
    """A regression column with one 'inf' or typo became a classification with every value a class."""
    p = write(tmp_path, f"a;y\n1;0.5\n2;0.25\n3;{bad}\n4;1.75\n")
    with pytest.raises(DataError, match=rf"row 4, column 2 \('y'\): target '{bad}' is not a finite number") as e:
        load_csv(p)
    assert str(p) in str(e.value) and "--task classification" in str(e.value)
    b = load_csv(p, task="classification")
    assert [b.classes[i] for i in b.y] == ["0.5", "0.25", bad, "1.75"]


def test_wrong_delimiter_is_named(tmp_path):
    p = write(tmp_path, "a;b;y\n1;2;0\n3;4;1\n")
    with pytest.raises(DataError, match="no input columns besides the target .each row is one field when split at ','"):
        load_csv(p, delimiter=",")


def test_integer_labels_beyond_float64_stay_distinct(tmp_path):
    p = write(tmp_path, "a,y\n1,12345678901234567\n2,12345678901234568\n3,2.0\n")
    b = load_csv(p, task="classification")
    assert b.classes == [2, 12345678901234567, 12345678901234568] and b.y.tolist() == [1, 2, 0]


def test_unknown_target_and_bad_index(tmp_path):
    p = write(tmp_path, "a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match="no target column 'price' \\(a, b, y\\)"):
        load_csv(p, target="price")
    with pytest.raises(DataError, match="out of range"):
        load_csv(p, target=7)


def test_labels_outside_training_set(tmp_path):
    p = write(tmp_path, "a,y\n1,cat\n2,bird\n")
    with pytest.raises(DataError, match=r"row 3, column 2 \('y'\): label 'bird' was not in the training labels"):
        load_csv(p, classes=["cat", "dog"])
    b = load_csv(write(tmp_path, "a,y\n1,dog\n", "e.csv"), classes=["cat", "dog"])
    assert b.y.tolist() == [1] and b.classes == ["cat", "dog"]


def test_encoding_nul_missing_file_directory(tmp_path):
    with pytest.raises(DataError, match="row 2: not UTF-8"):
        load_csv(write(tmp_path, b"a,y\n\xff\xfe,1\n", mode="wb"))
    with pytest.raises(DataError, match="NUL"):
        load_csv(write(tmp_path, b"a,y\n1\x00,1\n", "n.csv", mode="wb"))
    with pytest.raises(DataError, match="no such file"):
        load_csv(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="directory"):
        load_csv(tmp_path)


@pytest.mark.parametrize("name", ["d.json", "d.xlsx", "d.csv.gz"])
def test_other_formats_are_named_not_parsed_as_csv(tmp_path, name):
    """A JSON file was read as CSV: 'no data rows after the header'; an .xlsx: 'not UTF-8 text'."""
    p = write(tmp_path, b'[{"a": 1, "y": 0}]\n', name, mode="wb")
    for load in (load_file, lambda p: load_csv(p, target=None)):  # training, and predict's input
        with pytest.raises(
            DataError, match=rf"{name}: a \.(json|xlsx|gz) file; chainrule reads CSV text, .npz and .npy"
        ):
            load(p)


def test_single_class_refused(tmp_path):
    with pytest.raises(DataError, match="at least two classes"):
        load_file(write(tmp_path, "a,y\n1,0\n2,0\n"))


def test_prediction_inputs_match_by_name(tmp_path):
    p = write(tmp_path, "b,y,a\n2,0,1\n4,1,3\n")
    b = load_csv(p, target=None, feature_names=["a", "b"])
    assert b.x.tolist() == [[1, 2], [3, 4]]


def test_repeated_column_name_refused(tmp_path):
    """Inputs matched by name read column 'a' twice: the second 'a' was silently replaced by the first."""
    p = write(tmp_path, "a,a,y\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"d.csv: column 2 has the same name 'a' as column 1"):
        load_csv(p)
    with pytest.raises(DataError, match="column 2 has the same name 'a'"):
        load_csv(p, target=None, feature_names=["a", "a"])


def test_prediction_header_sharing_only_some_names_is_an_error(tmp_path):
    """Columns b, c for a model of a, b were read by position: b fed as a, c as b."""
    p = write(tmp_path, "b,c\n2,5\n4,6\n")
    with pytest.raises(DataError, match=r"d.csv: no column 'a' of the model's inputs \['a', 'b'\]"):
        load_csv(p, target=None, feature_names=["a", "b"])
    b = load_csv(write(tmp_path, "u,v\n2,5\n", "e.csv"), target=None, feature_names=["a", "b"])
    assert b.x.tolist() == [[2, 5]]  # no name in common: by position, as a file without a header


def test_npz_and_npy(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3)), y=np.array([0, 1, 1, 0]), x_test=np.ones((2, 3)), y_test=[1, 0])
    b = load_array_file(tmp_path / "d.npz")
    assert b.task == "classification" and b.x.shape == (4, 3) and b.x_test.shape == (2, 3)
    np.save(tmp_path / "d.npy", np.c_[np.ones((5, 2)), np.linspace(0, 1, 5)])
    b = load_file(tmp_path / "d.npy")
    assert b.task == "regression" and b.y.shape == (5, 1)
    np.savez(tmp_path / "o.npz", x=np.array([object()] * 2, dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match="Python objects"):
        load_file(tmp_path / "o.npz")
    np.savez(tmp_path / "k.npz", a=np.zeros(2))
    with pytest.raises(DataError, match="'x' and 'y'"):
        load_file(tmp_path / "k.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="bad.npz"):
        load_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "nan.npz", x=np.array([[1.0], [np.nan]]), y=np.array([0, 1]))
    with pytest.raises(DataError, match="sample 1 has a NaN"):
        load_file(tmp_path / "nan.npz")


@pytest.mark.parametrize("name", ["t.npz", "t.npy"])
def test_text_file_named_npz_is_not_a_numpy_file(tmp_path, name):
    """np.load takes any other file for a pickle: the message said it contains Python objects."""
    with pytest.raises(DataError, match=re.escape(f"{name}: not a NumPy .npy/.npz file (it starts with b'a,b,y")):
        load_file(write(tmp_path, "a,b,y\n1,2,0\n", name))
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(DataError, match="dir.npz: is a directory"):
        load_file(tmp_path / "dir.npz")


@pytest.mark.parametrize(
    "test, match",
    [
        ({"x_test": [[1.0, np.nan]], "y_test": [0]}, "test sample 0 has a NaN or infinite input"),
        ({"x_test": np.ones((2, 3)), "y_test": [0, 1]}, r"test samples have shape \(3,\), training samples \(2,\)"),
        ({"x_test": np.ones((2, 2)), "y_test": [0]}, "x_test has 2 samples but y_test has 1"),
        ({"x_test": np.ones((2, 2))}, "found an array 'x_test' but no 'y_test'"),
        ({"x_test": np.array([["a", "b"]]), "y_test": [0]}, "array 'x_test' has dtype <U1"),
    ],
)
def test_npz_test_split_checked_like_the_training_split(tmp_path, test, match):
    """A NaN, a wrong width or a lone x_test in the test arrays is an error naming the file, not a NaN test loss."""
    np.savez(tmp_path / "t.npz", x=np.ones((4, 2)), y=np.array([0, 1, 1, 0]), **test)
    with pytest.raises(DataError, match=match) as e:
        load_file(tmp_path / "t.npz")
    assert "t.npz" in str(e.value)


def test_npz_labels_as_a_column_are_labels(tmp_path):
    """y of shape (N, 1) with 0/1 was read as a regression target, so an MLP was fitted to it with MSE."""
    np.savez(tmp_path / "c.npz", x=np.ones((4, 2)), y=np.array([[0], [1], [1], [0]]))
    b = load_file(tmp_path / "c.npz")
    assert b.task == "classification" and b.y.tolist() == [0, 1, 1, 0]
    np.savez(tmp_path / "r.npz", x=np.ones((4, 2)), y=np.array([[0.5], [1.5], [1.25], [0.0]]))
    b = load_file(tmp_path / "r.npz")
    assert b.task == "regression" and b.y.shape == (4, 1)


def test_npz_float_labels_beyond_int64_are_not_classes(tmp_path):
    """1e30 is integral but not an int64: it read as class -2**63 (the cast overflowed); now it is regression."""
    np.savez(tmp_path / "b.npz", x=np.ones((4, 2)), y=np.array([0, 1e30, 0, 1]))
    b = load_file(tmp_path / "b.npz")
    assert b.task == "regression" and b.y.ravel().tolist() == [0, np.float32(1e30), 0, 1]
    for y, bad in (([0, 1e30, 0, 1], "1e+30"), ([0, 1.5, 0, 1], "1.5"), ([0, np.nan, 0, 1], "nan")):
        np.savez(tmp_path / "c.npz", x=np.ones((4, 2)), y=np.array(y))
        with pytest.raises(DataError, match=re.escape(f"c.npz: y[1]: classification label {bad} is not an integer")):
            load_file(tmp_path / "c.npz", task="classification")


cells = st.one_of(
    st.sampled_from(["", "1", "-2.5", "nan", "inf", "NA", "abc", "1e400", " 3 ", '"4"', "x,y", "0", "7"]),
    st.text(max_size=4),
)
rows = st.lists(st.lists(cells, min_size=0, max_size=4), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows, st.sampled_from([",", ";", "\t"]), st.sampled_from([None, -1, 0, "a", "zz"]), st.binary(max_size=8))
def test_fuzz_csv_loads_or_raises_data_error(tmp_path, rows, delim, target, junk):
    text = "\n".join(delim.join(r) for r in rows)
    p = tmp_path / "f.csv"
    p.write_bytes(
        text.encode("utf-8", "surrogatepass") + junk if junk[:1] == b"\x00" else text.encode("utf-8", "surrogatepass")
    )
    try:
        b = load_file(p, target=target)
    except DataError as e:
        assert str(p) in str(e) or "task" in str(e)
    else:
        assert len(b.x) == len(b.y) > 0 and np.isfinite(b.x).all()


def test_a_header_read_as_data_under_no_header_gets_a_hint(tmp_path):
    p = write(tmp_path, "a,b,label\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"row 1, column 1: not a number: 'a' \(if the first row names the columns.*"):
        load_csv(p, header=False)
    p = write(tmp_path, "1,2,0\n3,x,1\n")  # a later row: no hint
    with pytest.raises(DataError, match=r"row 2, column 2: not a number: 'x'$"):
        load_csv(p, header=False)
