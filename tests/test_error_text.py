"""The one rule that turns an exception into the one line users see (``stylegrad.errors.error_text``)."""
from stylegrad.errors import ConfigError, error_text, first_line


def test_our_errors_are_shown_as_written():
    assert error_text(ConfigError("--size must be > 0")) == "--size must be > 0"


def test_other_errors_show_their_type_and_first_line_only():
    assert error_text(RuntimeError("  boom\nTraceback detail\n")) == "RuntimeError: boom"


def test_an_error_without_a_message_is_its_type():
    assert error_text(KeyError()) == "KeyError"
    assert error_text(ValueError("   \n")) == "ValueError"


def test_first_line():
    assert first_line("a\nb") == "a"
    assert first_line("") == ""
    assert first_line(OSError("x y\nz")) == "x y"
