"""``edgewise chat``: an interactive streaming chat against a node."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from edgewise.cli._app import app


@app.command()
def chat(
    url: Annotated[str, typer.Option(help="Base URL of the node's API.")] = "http://127.0.0.1:8080/v1",
    model: Annotated[str, typer.Option(help="Model to ask for.")] = "auto",
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 512,
) -> None:
    """Chat with a node in the terminal, streaming the answers (Ctrl-D or /exit quits)."""
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    client = openai.OpenAI(base_url=url, api_key="edgewise", max_retries=0)
    history: list[ChatCompletionMessageParam] = (
        [{"role": "system", "content": system}] if system else [])
    out = Console()
    out.print(f"[dim]chatting with {url} — /exit or Ctrl-D to quit, /reset to forget[/]")
    while True:
        try:
            line = out.input("[bold cyan]you>[/] ")
        except (EOFError, KeyboardInterrupt):
            out.print()
            return
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/reset":
            history = history[:1] if system else []
            out.print("[dim]conversation reset" + (" (system prompt kept)" if system else "")
                      + "[/]")
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        out.print("[bold green]assistant>[/] ", end="")
        reply = []
        try:
            stream = client.chat.completions.create(
                model=model, messages=history, stream=True, max_tokens=max_tokens,
                temperature=temperature,
            )
            for part in stream:
                if part.choices and part.choices[0].delta.content:
                    reply.append(part.choices[0].delta.content)
                    out.print(part.choices[0].delta.content, end="", highlight=False,
                              markup=False)
            out.print()
        except openai.APIConnectionError:
            out.print(f"\n[red]cannot reach {url}; is `edgewise serve` running?[/]")
            history.pop()
            continue
        except openai.APIStatusError as exc:
            msg = exc.body.get("message") if isinstance(exc.body, dict) else exc.message
            out.print(f"\n[red]{exc.status_code}: {msg}[/]")
            history.pop()
            continue
        except KeyboardInterrupt:
            out.print("\n[dim](interrupted)[/]")
        history.append({"role": "assistant", "content": "".join(reply)})
