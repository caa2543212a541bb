"""Small models for the sensory-memory tests, built once per session and loaded through the real code.

- a token classifier: the bundled MiniLM weights with a fresh 2-label head (stands in for LLMLingua-2);
- a causal LM: a 2-layer GPT-2 built from a configuration, with the MiniLM tokenizer's vocabulary.
"""

from __future__ import annotations

from typing import Any

import pytest

COOKING = [
    ("Tonight I am cooking a lasagna for my family dinner.", "Lovely, a homemade lasagna recipe needs pasta sheets, meat sauce and bechamel."),
    ("How long should the tomato meat sauce simmer for the lasagna?", "Simmer the bolognese sauce for at least an hour so the flavours deepen."),
    ("Should I boil the lasagna pasta sheets before layering them?", "Fresh lasagna sheets can go straight in; dried pasta sheets cook better if boiled briefly."),
    ("How do I make the bechamel sauce without lumps?", "Whisk the milk slowly into the butter and flour roux over low heat."),
    ("Which cheese is best on top of the lasagna?", "Use mozzarella for melt and grated parmesan for a golden crust on the lasagna."),
    ("How many layers of pasta, sauce and cheese should the lasagna have?", "Four layers of pasta sheets, meat sauce, bechamel and cheese work well in a deep dish."),
    ("At what oven temperature do I bake the lasagna?", "Bake the lasagna at 180 degrees Celsius for about 45 minutes, covered with foil at first."),
    ("How do I know the lasagna is cooked through?", "The lasagna is done when the sauce bubbles at the edges and the cheese is browned."),
    ("Should the lasagna rest before I cut it?", "Let the baked lasagna rest 15 minutes so the layers of pasta and sauce set."),
    ("Can I freeze the leftover lasagna for another dinner?", "Yes, wrap leftover lasagna portions tightly and freeze them for up to three months."),
]
CAR_REPAIR = [
    ("My car makes a grinding noise when I press the brake pedal.", "A grinding brake noise usually means the brake pads are worn down to the metal."),
    ("Can I replace the brake pads on my car myself?", "Yes, replacing car brake pads is a common do-it-yourself repair with basic tools."),
    ("What tools do I need to change the brake pads?", "You need a car jack, jack stands, a lug wrench, a socket set and a brake caliper tool."),
    ("How do I take the wheel off to reach the brakes?", "Loosen the lug nuts, jack up the car, support it on stands and remove the wheel."),
    ("How do I remove the brake caliper from the rotor?", "Undo the two caliper bolts and slide the brake caliper off the rotor, without hanging it by the brake hose."),
    ("The brake rotor looks scored, should I replace it too?", "Deeply scored brake rotors should be replaced or resurfaced along with the new pads."),
    ("How do I push the caliper piston back for the new brake pads?", "Compress the caliper piston with a C-clamp or piston tool so the thicker new pads fit."),
    ("Do I need to bleed the brakes after changing the pads?", "Bleeding the brake fluid is only needed if you opened the brake hydraulic line."),
    ("How tight should I torque the caliper bolts and lug nuts?", "Torque the caliper bolts and wheel lug nuts to the values in the car's service manual."),
    ("How do I bed in the new brake pads after the repair?", "Drive and brake firmly several times from moderate speed to bed in the new pads on the rotors."),
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
    from lightmem_core.sensory.compressors.lingua_scorer import LinguaScorer

    return LinguaScorer(lingua_path, device="cpu", batch_size=8, max_text_tokens=4096)


@pytest.fixture(scope="session")
def attention_scorer(lingua_path: str) -> Any:
    from lightmem_core.sensory.compressors.lingua_scorer import LinguaScorer

    return LinguaScorer(lingua_path, device="cpu", batch_size=8, attention=True, max_text_tokens=4096)


@pytest.fixture(scope="session")
def compressors(scorer: Any, causal_path: str) -> dict[str, Any]:
    """One compressor of each kind at rate 0.5, keyed by name."""
    from lightmem_core.sensory.compressors.entropy import EntropyCompressor
    from lightmem_core.sensory.compressors.llmlingua2 import LLMLingua2Compressor
    from lightmem_core.sensory.compressors.wordfreq_entropy import WordfreqEntropyCompressor

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
