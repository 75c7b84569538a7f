import pytest
import yaml

from s2d_fast.config import ConfigError, all_keys, get_defaults, load_config, save_config
from s2d_fast.config import defaults as defaults_module


def test_defaults_declare_the_papers_keys():
    keys = set(all_keys(get_defaults()))
    for key in ("NUM_GPUS", "EVALUATE", "TRAIN.BASE_LR", "TRAIN.BATCH_SIZE", "TRAIN.RESUME", "SNET.ARCH",
                "DNET.ARCH", "DATA.NUM_CLASS", "OUTPUT_DIR", "RNG_SEED"):
        assert key in keys


def test_every_key_has_a_comment():
    source = open(defaults_module.__file__).read().splitlines()
    for key in all_keys(get_defaults()):
        section, _, leaf = key.rpartition(".")
        lhs = f"_C.{key} ="
        lines = [line for line in source if line.startswith(lhs)]
        assert len(lines) == 1, f"{key} declared {len(lines)} times"
        assert "  # " in lines[0], f"{key} has no comment"


def test_yaml_then_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("TRAIN:\n  BASE_LR: 0.5\n  EPOCHS: 3\nSNET:\n  ARCH: resnet18\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\nTRAIN:\n  EPOCHS: 4\n")
    cfg = load_config(child, ["TRAIN.BASE_LR", "1e-5", "SNET.ARCH", "mobilenetv2", "EVALUATE", "True", "NUM_GPUS", "0"])
    assert cfg.TRAIN.BASE_LR == 1e-5
    assert cfg.TRAIN.EPOCHS == 4
    assert cfg.SNET.ARCH == "mobilenetv2"
    assert cfg.EVALUATE is True
    assert cfg.NUM_GPUS == 0


def test_int_is_accepted_for_a_float_key():
    cfg = load_config(None, ["TRAIN.BASE_LR", "1"])
    assert cfg.TRAIN.BASE_LR == 1.0 and isinstance(cfg.TRAIN.BASE_LR, float)


def test_unknown_key_names_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key TRAIN\.BASE_LRR; did you mean TRAIN\.BASE_LR"):
        load_config(None, ["TRAIN.BASE_LRR", "0.1"])


def test_unknown_section_suggests_by_leaf():
    with pytest.raises(ConfigError, match=r"TRIAN\.BATCH_SIZE.*TRAIN\.BATCH_SIZE"):
        load_config(None, ["TRIAN.BATCH_SIZE", "4"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("SNET:\n  ARCHH: resnet18\n")
    with pytest.raises(ConfigError, match=rf"{path.name}: unknown config key SNET\.ARCHH; did you mean SNET\.ARCH"):
        load_config(path)


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"TRAIN\.BATCH_SIZE expects int .* got str 'many'"):
        load_config(None, ["TRAIN.BATCH_SIZE", "many"])
    with pytest.raises(ConfigError, match=r"EVALUATE expects bool"):
        load_config(None, ["EVALUATE", "3"])


def test_odd_number_of_overrides():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(None, ["TRAIN.BASE_LR"])


def test_choices_are_checked():
    with pytest.raises(ConfigError, match="TRAIN.STAGE must be one of warmup, sampling"):
        load_config(None, ["TRAIN.STAGE", "finetune"])


def test_frames_cannot_exceed_candidates():
    with pytest.raises(ConfigError, match="DNET.NUM_FRAMES .* exceeds DATA.NUM_CANDIDATES"):
        load_config(None, ["DATA.NUM_CANDIDATES", "4", "SNET.NUM_FRAMES", "4", "DNET.NUM_FRAMES", "8"])


def test_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(None, ["TRAIN.BASE_LR", "0.02", "S2D.FUSION_STAGES", "[2, 4]"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["S2D"]["FUSION_STAGES"] == [2, 4]


def test_shipped_configs_load():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert files
    for path in files:
        load_config(path)
