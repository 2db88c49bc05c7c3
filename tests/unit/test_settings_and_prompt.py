import pytest

from qwend.engine.template import ChatTemplate
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


# Written for this test in the style of Qwen3's template: the constructs it relies on must work in the sandbox.
QWEN3_STYLE = """
{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}{{- '\\n</tools><|im_end|>\\n' }}{%- endif %}
{%- set ns = namespace(last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}{%- if message.role == 'user' and not message.content.startswith('<tool_response>') %}{%- set ns.last_query_index = (messages|length - 1) - loop.index0 %}{%- break %}{%- endif %}{%- endfor %}
{%- for message in messages %}
{%- if message.role == 'assistant' %}
{%- set reasoning = message.reasoning_content if message.reasoning_content is string else '' %}
{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}
{{- '<|im_start|>assistant\\n' }}{%- if loop.index0 > ns.last_query_index and reasoning %}{{- '<think>\\n' + reasoning + '\\n</think>\\n\\n' }}{%- endif %}{{- content }}
{%- for call in message.tool_calls or [] %}{{- '<tool_call>\\n{"name": "' + call.function.name + '", "arguments": ' + (call.function.arguments | tojson) + '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}
"""


def test_qwen3_style_template_renders_tools_calls_results_and_reasoning():
    from qwend.types import ToolCall, ToolSpec

    messages = [
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),),
                reasoning="I should call the tool."),
        Message("tool", '{"temp": 18}', tool_call_id="call_1"),
    ]
    prompt = ChatTemplate(QWEN3_STYLE).render(messages, [ToolSpec("get_weather", "Weather")])
    assert '"name": "get_weather"' in prompt.split("</tools>")[0]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<think>\nI should call the tool.\n</think>" in prompt
    assert '<tool_response>\n{"temp": 18}\n</tool_response>' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_messages_with_images_render_as_content_parts_for_vision_templates():
    from qwend.types import Image
    from tests.tiny_model import QWEN_VL_CHAT_TEMPLATE

    picture = Image(b"\x89PNG...", "image/png")
    messages = [Message("user", "What is this?", images=(picture, picture)), Message("assistant", "Two cats."),
                Message("user", "And now?")]
    assert ChatTemplate(QWEN_VL_CHAT_TEMPLATE).render(messages) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>"
        "What is this?<|im_end|>\n<|im_start|>assistant\nTwo cats.<|im_end|>\n<|im_start|>user\nAnd now?<|im_end|>\n"
        "<|im_start|>assistant\n")
    # messages without images stay plain text: what text templates are given is unchanged
    shown = ChatTemplate("{{ messages | tojson }}").render(messages[1:], add_generation_prompt=False)
    assert shown == '[{"role": "assistant", "content": "Two cats."}, {"role": "user", "content": "And now?"}]'
