import pytest

from qwend.chat.prompt import ChatTemplate
from qwend.errors import BackendError
from qwend.settings import Settings
from qwend.types import Message


def test_flags_override_environment_which_overrides_dotenv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("QWEND_PORT=7000\nQWEND_MODEL=smollm2:135m\nQWEND_QUEUE_SIZE=3\n")
    monkeypatch.setenv("QWEND_PORT", "7001")
    settings = Settings(model="qwen2.5-coder:0.5b")
    assert settings.port == 7001  # environment beats .env
    assert settings.model == "qwen2.5-coder:0.5b"  # a flag beats both
    assert settings.queue_size == 3  # .env alone
    assert settings.host == "127.0.0.1"  # loopback unless told otherwise


def test_every_setting_is_described():
    assert all(field.description for field in Settings.model_fields.values())


def test_fallback_chatml_when_the_model_has_no_template():
    prompt = ChatTemplate(None).render([Message("system", "Be brief."), Message("user", "Hi")])
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tojson_does_not_html_escape_like_transformers():
    template = ChatTemplate("{{ messages[0] | tojson }}")
    assert template.render([Message("user", "<b>&'")]) == '{"role": "user", "content": "<b>&\'"}'


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.append(1) }}",  # the immutable sandbox refuses mutation too
        "{{ raise_exception('bad template') }}",
    ],
)
def test_templates_run_sandboxed_and_fail_cleanly(source):
    with pytest.raises(BackendError, match="chat template failed"):
        ChatTemplate(source).render([Message("user", "hi")])
