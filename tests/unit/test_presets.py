"""Config group `preset`: merged after the backbone and task groups, before the command line."""

from __future__ import annotations

import pytest

from conf.load import ConfigError, compose, group_options


def test_no_preset_changes_nothing():
    assert compose([]).preset == "none"
    assert compose(["preset=none"]) == compose([])


def test_small_preset_shrinks_search_and_solutions_for_a_real_backbone():
    base, small = compose(["backbone=smollm2"]), compose(["backbone=smollm2", "preset=small"])
    assert small.preset == "small"
    assert small.search.iteration_limit < base.search.iteration_limit
    assert small.eval.search.iteration_limit < base.eval.search.iteration_limit
    assert small.backbone.max_solution_tokens < base.backbone.max_solution_tokens
    # everything the preset does not name stays the backbone's (resources that fit 2 cores included)
    assert small.backbone.policy_resources == base.backbone.policy_resources
    assert small.backbone.sft == base.backbone.sft


def test_command_line_wins_over_the_preset():
    cfg = compose(["backbone=smollm2", "preset=small", "search.iteration_limit=9"])
    assert cfg.search.iteration_limit == 9


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'huge'; allowed: none, small"):
        compose(["preset=huge"])
    assert group_options("preset") == ["none", "small"]
