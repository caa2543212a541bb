"""Small models for the sensory-memory tests, built once per session and loaded through the real code.

- a token classifier: the bundled MiniLM weights with a fresh 2-label head (stands in for LLMLingua-2);
- a causal LM: a 2-layer GPT-2 built from a configuration, with the MiniLM tokenizer's vocabulary.
"""

from __future__ import annotations

from typing import Any

import pytest

COOKING = [
    ("How long should I knead bread dough by hand?", "About ten minutes, until the dough is smooth and elastic."),
    ("My sourdough starter smells like vinegar, is that normal?", "Yes, a sour smell means the starter is active; feed it flour and water."),
    ("What oven temperature is best for roasting vegetables?", "Roast vegetables at around 220 degrees Celsius so they caramelise."),
    ("How do I keep pasta from sticking together while it boils?", "Use plenty of boiling salted water and stir the pasta early."),
    ("Can I use butter instead of olive oil to saute onions?", "Yes, butter gives the onions a sweeter flavour; keep the heat medium."),
    ("How much salt goes into a pot of tomato sauce?", "Start with a teaspoon of salt and taste the sauce as it simmers."),
    ("Why did my cake sink in the middle after baking?", "The cake was probably underbaked or the oven door was opened too early."),
    ("What herbs go well with roast chicken?", "Thyme, rosemary and garlic are classic herbs for roast chicken."),
    ("How do I make a creamy risotto without cream?", "Stir the rice often and add warm stock slowly; the starch makes it creamy."),
    ("Should I rest a steak after cooking it?", "Rest the steak five minutes so the juices settle before slicing."),
]
CAR_REPAIR = [
    ("My car makes a grinding noise when I brake.", "Grinding usually means the brake pads are worn down to the metal."),
    ("How do I check the engine oil level?", "Park on level ground, pull the dipstick, wipe it, reinsert and read the oil mark."),
    ("The check engine light came on this morning.", "Read the fault code with an OBD2 scanner to see which sensor triggered it."),
    ("My car battery keeps dying overnight.", "Something drains the battery; test the alternator and look for a parasitic draw."),
    ("How often should I replace the spark plugs?", "Most spark plugs last 50,000 to 100,000 km depending on the engine."),
    ("The steering wheel vibrates at highway speed.", "Vibration at speed often means the wheels need balancing or alignment."),
    ("Can I change the car's air filter myself?", "Yes, open the filter box under the hood and swap in the new air filter."),
    ("Coolant is leaking under the engine.", "Check the radiator hoses and the water pump for a coolant leak."),
    ("My transmission slips when shifting gears.", "Low or burnt transmission fluid can make the gearbox slip."),
    ("What tire pressure should my car have?", "Use the tire pressure printed on the sticker inside the driver's door."),
]


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from lightmem_core.embedders.huggingface import bundled_minilm_path

    return bundled_minilm_path()


@pytest.fixture(scope="session")
def lingua_path(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A MiniLM token classifier with a fresh 2-label head, saved with its tokenizer."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(1234)
    folder = tmp_path_factory.mktemp("renamed-token-classifier")  # any name: no name-based rules
    model = AutoModelForTokenClassification.from_pretrained(minilm_path, num_labels=2)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def causal_path(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A 2-layer GPT-2 with random weights and the MiniLM tokenizer's vocabulary."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1234)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    config = GPT2Config(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=64, n_positions=256,
                        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    folder = tmp_path_factory.mktemp("tiny-causal")
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def scorer(lingua_path: str) -> Any:
    from lightmem_core.compressors.lingua_scorer import LinguaScorer

    return LinguaScorer(lingua_path, device="cpu", batch_size=8, max_text_tokens=4096)


@pytest.fixture(scope="session")
def attention_scorer(lingua_path: str) -> Any:
    from lightmem_core.compressors.lingua_scorer import LinguaScorer

    return LinguaScorer(lingua_path, device="cpu", batch_size=8, attention=True, max_text_tokens=4096)


@pytest.fixture(scope="session")
def compressors(scorer: Any, causal_path: str) -> dict[str, Any]:
    """One compressor of each kind at rate 0.5, keyed by name."""
    from lightmem_core.compressors.entropy import EntropyCompressor
    from lightmem_core.compressors.llmlingua2 import LLMLingua2Compressor
    from lightmem_core.compressors.wordfreq_entropy import WordfreqEntropyCompressor

    return {
        "llmlingua-2": LLMLingua2Compressor(scorer, rate=0.5),
        "entropy": EntropyCompressor(causal_path, rate=0.5, device="cpu", batch_size=8, max_text_tokens=4096),
        "wordfreq": WordfreqEntropyCompressor(rate=0.5),
    }


def conversation() -> list[tuple[str, str]]:
    """Ten cooking turns, then ten car-repair turns: the topic changes at turn 10."""
    return COOKING + CAR_REPAIR


def as_messages(turns: list[tuple[str, str]], session_id: str = "s1", user_id: str = "u1") -> list[Any]:
    """User/assistant ``Message`` objects for the given (user, assistant) turns."""
    from lightmem_core.models import Message, message_id_for

    out = []
    for k, (user, assistant) in enumerate(turns):
        for j, (role, text) in enumerate((("user", user), ("assistant", assistant))):
            index = 2 * k + j
            out.append(Message(id=message_id_for(user_id, session_id, index), user_id=user_id, session_id=session_id,
                               turn_index=index, role=role, content=text, time_stamp="2025-01-10T10:00:00Z"))
    return out
