"""The chat prompt path of the paper's backbone groups (llama, glm) and of smollm2: every dataset the loop
writes renders its prompts with the policy tokenizer's chat template, exactly as the actors do."""

from __future__ import annotations

import pytest

from conf.load import compose
from models.backbones import ASCII_CHARS, TINY_CHAT_TEMPLATE, build_tiny_tokenizer
from pipeline.baselines import preference_pairs, select_rest_em
from pipeline.prompting import PromptFormat
from pipeline.records import Question
from pipeline.values import select_sft
from tests.unit.test_values import SFT_SPEC, make_tree


@pytest.fixture(scope="module")
def chat_tokenizer():
    tok = build_tiny_tokenizer("".join(sorted(set(ASCII_CHARS))), 512)
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


@pytest.mark.parametrize("group", ["llama", "glm", "smollm2"])
def test_chat_groups_render_every_dataset_prompt_with_the_template(group, chat_tokenizer):
    cfg = compose([f"backbone={group}"])
    fmt = PromptFormat.from_backbone(cfg.backbone)
    assert fmt.style == "chat"
    system = f"<system>{cfg.backbone.system_prompt}\n" if cfg.backbone.system_prompt else ""
    expected = f"{system}<user>2+3?\n<assistant>\n"
    assert fmt.prompt("2+3?", chat_tokenizer) == expected

    tree = make_tree(SFT_SPEC)
    chosen = select_sft(tree, "2+3?", cfg.selection, fmt, gold="5", tokenizer=chat_tokenizer)
    assert chosen and all(c.prompt == expected for c in chosen)

    q = Question("q", "2+3?", "5", solution=("x = 5", "The answer is 5"))
    assert fmt.gold_example(q, "replay", chat_tokenizer).prompt == expected
    samples = [(("x = 5", "The answer is 5"), 7), (("guess", "The answer is 6"), 7)]
    assert select_rest_em(q, samples, "5", fmt, 2, chat_tokenizer)[0].prompt == expected
    pair = preference_pairs(q, samples, [0.9, 0.1], fmt, 0.1, chat_tokenizer)[0]
    assert pair.prompt == expected

    with pytest.raises(ValueError, match="chat template"):  # never a silent plain rendering
        select_sft(tree, "2+3?", cfg.selection, fmt, gold="5")


def test_tiny_chat_build_has_a_template_and_plain_build_keeps_its_cache_key(tmp_path):
    from loop.methods import common as phases
    from models.backbones import tiny_spec

    plain = compose([])
    chat = compose(["backbone.prompt_format=chat", "backbone.system_prompt=Be brief."])
    assert "chat_template" not in tiny_spec(plain.backbone, plain.task, 0)  # old entries still found
    assert phases.prompt_tokenizer(plain) is None
    cfg = compose(
        ["backbone.prompt_format=chat", "backbone.system_prompt=Be brief.", f"cache_dir={tmp_path}"]
    )
    tok = phases.prompt_tokenizer(cfg)
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "(1+2)*3"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<system>Be brief.\n<user>(1+2)*3\n<assistant>\n"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text  # every character in the vocabulary
    assert set(tiny_spec(chat.backbone, chat.task, 0)["alphabet"]) >= set("<>systemuraBbief.")
