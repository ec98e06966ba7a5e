"""The web page in a real browser: Debian's chromium (scripts/install_system_deps.sh), driven by Playwright.

Playwright never downloads a browser here: it drives /usr/bin/chromium (THEREMIN_CHROMIUM moves it). A missing
browser FAILS the test (CI must not go green without it); THEREMIN_SKIP_BROWSER=1 skips it on purpose.
The screenshot lands in outputs/screenshots/serve.png (git-ignored; README shows where).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import midi_factory as mf
import pytest
from playwright.sync_api import expect

from theremin.music.midi import read_midi, write_midi

# Playwright's expect() waits for a state (up to its timeout) instead of reading the page once: a page that
# updates after a fetch is checked when it has updated, not raced (issue 21.9)
expect.set_options(timeout=30_000)  # a loaded 2-core machine: generous, it returns as soon as the state holds

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "outputs" / "screenshots" / "serve.png"
CHROMIUM = os.environ.get("THEREMIN_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
N = 3

# JS: the peak amplitude of an audio element's file, decoded by the browser itself
PEAK = """async (src) => {
  const data = await (await fetch(src)).arrayBuffer();
  const audio = await new OfflineAudioContext(1, 1, 44100).decodeAudioData(data);
  let peak = 0;
  for (const x of audio.getChannelData(0)) peak = Math.max(peak, Math.abs(x));
  return [peak, audio.duration];
}"""
# JS: a DataTransfer holding one file, as a drag from the desktop brings it (a real drop event, not set_input_files)
DROP = """([name, bytes]) => {
  const data = new DataTransfer();
  data.items.add(new File([new Uint8Array(bytes)], name, { type: "audio/midi" }));
  return data;
}"""

# JS run before the page's own: keeps the text fields of each form the page sends (window.sentForms); the browser
# does not hand a multipart body holding a file to Playwright's request.post_data
RECORD_FORMS = """(() => {
  const send = window.fetch;
  window.sentForms = [];
  window.fetch = (url, options) => {
    if (options && options.body instanceof FormData) {
      window.sentForms.push(Object.fromEntries([...options.body.entries()].filter(([, v]) => typeof v === "string")));
    }
    return send(url, options);
  };
})();"""


def click_roll(page):
    """Click Roll: (the POST /api/rolls answer, the text fields of the form it sent; needs RECORD_FORMS)."""
    with page.expect_response(lambda r: r.url.endswith("/api/rolls") and r.request.method == "POST") as answer:
        page.click("#roll")
    return answer.value, page.evaluate("window.sentForms.at(-1)")


@pytest.fixture(scope="module")
def browser():
    if os.environ.get("THEREMIN_SKIP_BROWSER") == "1":
        pytest.skip("THEREMIN_SKIP_BROWSER=1")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"no browser at {CHROMIUM}: run scripts/install_system_deps.sh (Debian's chromium), or set "
                    "THEREMIN_SKIP_BROWSER=1 to skip this test on purpose")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """The real app on a loopback port, in uvicorn, as theremin-serve runs it."""
    import uvicorn
    from test_serve import make_service

    from theremin.serve.app import create_app

    service = make_service(trained[0], tmp_path_factory.mktemp("rolls"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    service.close()


def test_roll_listen_download_keep_reroll_and_errors_in_chromium(browser, server, trained, tmp_path):
    piece = read_midi(sorted(Path(trained[2]).glob("*.mid"))[3])
    piece.notes = [n for n in piece.notes if n.start < 8 * piece.ticks_per_beat]  # two bars: fits the context
    prompt = write_midi(piece, tmp_path / "two_bars.mid")
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_function("document.querySelector('#model-info').textContent.includes('params')")
    page.wait_for_function("document.querySelectorAll('#demo-prompt option').length > 3")  # "—" + built-ins

    # upload a prompt: it is drawn and counted
    page.set_input_files("#prompt-file", str(prompt))
    expect(page.locator("#prompt-info")).to_contain_text(f"{len(piece.notes)} notes")

    # roll N variations
    page.fill("#n", str(N))
    page.fill("#length", "16")
    page.click("#roll")
    page.wait_for_function(f"document.querySelectorAll('#cards .card').length === {N}", timeout=60_000)
    cards = page.locator("#cards .card")
    page.wait_for_function("[...document.querySelectorAll('#cards img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=60_000)
    for i in range(N):
        src = cards.nth(i).locator("audio").get_attribute("src")
        peak, seconds = page.evaluate(PEAK, src)
        assert peak > 0.01 and seconds > 1, (src, peak, seconds)
    expect(page.locator("#history li")).to_have_count(1)
    first_id = page.locator("#history li").first.get_attribute("data-id")

    # download a MIDI that parses: the prompt plus the new notes
    with page.expect_download() as download:
        cards.nth(0).locator("a.download").click()
    path = tmp_path / "download.mid"
    download.value.save_as(path)
    assert len(read_midi(path).notes) > len(piece.notes)
    # and the new notes alone (a clip from bar 1): as many as its link says (the card counts also the notes
    # added to the prompt's last chord, which sound before the roll point)
    for i in range(N):
        expect(cards.nth(i).locator("a.download-new")).to_have_text("new notes only (clip)")
    with page.expect_download() as download:
        cards.nth(0).locator("a.download-new").click()
    download.value.save_as(tmp_path / "clip.mid")
    new = int(re.search(r"(\d+) new notes", cards.nth(0).locator("h3").text_content())[1])
    clip = int(re.search(r"roll point on \((\d+)\)", cards.nth(0).locator("a.download-new").get_attribute("title"))[1])
    assert len(read_midi(tmp_path / "clip.mid").notes) == clip > 0 and clip <= new

    # keep variation 2 (it becomes the prompt), then roll again with the space bar
    cards.nth(1).locator(".keep").click()
    page.wait_for_function("document.querySelector('#prompt-info').textContent.includes('variation 2')")
    page.locator("h1").click()  # focus off the controls: space rolls
    page.keyboard.press("Space")
    page.wait_for_function("document.querySelectorAll('#history li').length === 2", timeout=60_000)
    page.wait_for_function(f"document.querySelectorAll('#cards .card').length === {N}")
    page.wait_for_function("[...document.querySelectorAll('#cards img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=60_000)
    expect(page.locator("#history li").first).not_to_have_attribute("data-id", first_id)
    expect(page.locator("#history li").first).to_contain_text("variation 2")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # re-roll from bar K=1 (keep the first bar), then go back to the first roll in the history
    page.fill("#keep-bars", "1")
    page.click("#reroll")
    page.wait_for_function("document.querySelectorAll('#history li').length === 3", timeout=60_000)
    expect(page.locator("#results-title")).to_contain_text("kept 1 bar of the prompt and re-rolled the rest")
    expect(page.locator("#history li").first).to_contain_text("K=1")
    page.locator(f"#history li[data-id='{first_id}'] button").click()
    expect(page.locator("#history li.current")).to_have_attribute("data-id", first_id)  # waits for the state
    expect(page.locator("#prompt-info")).to_contain_text("two_bars.mid")

    # an error from the API is shown as its message
    bad = tmp_path / "notes.mid"
    bad.write_text("these are not notes")
    page.set_input_files("#prompt-file", str(bad))
    page.click("#roll")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("notes.mid")
    expect(page.locator("#error")).to_contain_text("not a MIDI file")
    expect(page.locator("#stale-note")).to_be_visible()  # the cards on show are not this roll's answer
    expect(page.locator("#results")).to_have_class(re.compile(r"\bstale\b"))
    # and a bad setting: the message names the field
    page.select_option("#demo-prompt", "c-major-scale")
    expect(page.locator("#prompt-info")).to_contain_text("c-major-scale")
    page.fill("#pitch-lo", "84")
    page.fill("#pitch-hi", "48")
    page.click("#roll")
    expect(page.locator("#error")).to_contain_text("pitch_range")
    expect(page.locator("#error")).to_contain_text("reversed")
    assert not errors, errors


def test_a_prompt_with_an_impossible_meter_is_drawn_and_refused_not_hung(browser, server, tmp_path):
    """Issue 21.6: a 0/4 time signature made the page draw endless bars (the tab hung > 15 s) and the server
    answer 500; now the page draws it in 4/4 and says so, and the roll is refused with the reason."""
    notes = [(i * 480, (i + 1) * 480, p, 80) for i, p in enumerate((60, 64, 67, 72))]
    path = tmp_path / "no_meter.mid"
    path.write_bytes(mf.smf_bytes([[(0, bytes([0xFF, 0x58, 0x04, 0, 2, 24, 8])), *mf.notes_to_events(notes)]]))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(10_000)  # a hung tab fails here instead of holding the test
    page.goto(server)
    expect(page.locator("#model-info")).to_contain_text("params")
    page.set_input_files("#prompt-file", str(path))
    expect(page.locator("#prompt-info")).to_contain_text("time signature 0/4 is not a meter")
    page.click("#roll")
    expect(page.locator("#error")).to_contain_text("time signature 0/4")
    page.close()


def test_a_band_prompt_shows_its_tracks_mutes_one_and_rerolls_another(browser, server, tmp_path):
    """Issue 18 on the page: a dropped band file shows a control per track (the server's names and note counts,
    drum notes counted); muting one track and re-rolling another sends mute and add_part (refused, naming the track,
    by this chorale model, which has no token for a switch to a bass), and each card offers the new notes alone.
    Issue 20: a dropped file is named by the file input; stale cards are marked after an error.

    The band is tiny: the test model's context is 128 tokens and its tokenizer learned chorales, where a band's
    part header costs several tokens a character (a longer band is refused as longer than the context)."""
    band = mf.make_midi(tmp_path / "band.mid", (), extra_tracks=[
        {"notes": [(0, 100, 36, 100)], "is_drum": True},
        {"notes": [(0, 400, 36, 100), (480, 880, 38, 100)], "program": 33, "name": "Bass"},
        {"notes": [(0, 900, 64, 70)], "program": 0},
    ])
    piece = read_midi(band)
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script(RECORD_FORMS)
    hosts = set()  # the page works offline: it asks nothing of another host
    page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc))
    page.goto(server)
    expect(page.locator("#model-info")).to_contain_text("params")

    # drop it on the drop zone: drawn, counted as the server counts (drums too), named by the file input
    data = page.evaluate_handle(DROP, ["band.mid", list(band.read_bytes())])
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})
    expect(page.locator("#prompt-info")).to_contain_text(f"band.mid: {len(piece.notes)} notes")
    assert len(piece.notes) == 4
    expect(page.locator("#prompt-file-name")).to_contain_text("band.mid")
    assert page.evaluate("document.querySelector('#prompt-file').files[0].name") == "band.mid"

    # one control per track
    rows = page.locator("#part-list .part")
    expect(rows).to_have_count(3)
    assert rows.locator(".part-name").all_text_contents() == ["Drums", "Bass (bass)", "Acoustic Grand Piano (piano)"]
    assert rows.locator(".part-notes").all_text_contents() == ["1 note", "2 notes", "1 note"]
    drums, bass, piano = rows.nth(0), rows.nth(1), rows.nth(2)
    expect(page.locator("#parts-plan")).to_contain_text("plays on with Drums, Bass, Acoustic Grand Piano")

    # one re-roll at a time, and a re-roll or an added part
    bass.locator("input[value=reroll]").check()
    piano.locator("input[value=reroll]").check()
    expect(bass.locator("input[value=keep]")).to_be_checked()
    page.select_option("#add-part", "guitar")
    expect(piano.locator("input[value=keep]")).to_be_checked()
    expect(page.locator("#parts-plan")).to_contain_text("adds a guitar part over the prompt's 1 bar")
    bass.locator("input[value=reroll]").check()
    expect(page.locator("#add-part")).to_have_value("")
    drums.locator("input[value=mute]").check()
    expect(page.locator("#parts-plan")).to_contain_text("leaves out Drums")
    expect(page.locator("#parts-plan")).to_contain_text("re-rolls Bass over the prompt's 1 bar")

    # roll: the request carries mute and add_part (and a pitch range with only its low end filled); this model
    # learned chorales, so its tokenizer has no token for a switch to a bass: the page shows the server's reason
    page.fill("#n", "2")
    page.fill("#pitch-lo", "30")
    answer, fields = click_roll(page)
    assert fields["mute"] == "drums" and fields["add_part"] == "Bass", fields
    assert fields["pitch_range"] == "30,127" and "instruments" not in fields, fields
    assert answer.status == 422, answer.text()
    expect(page.locator("#error")).to_contain_text("sampling.add_part='Bass'")
    expect(page.locator("#error")).to_contain_text("no token for a switch to Bass")

    # keep the bass, mute the drums: the roll plays on with the bass and the piano
    bass.locator("input[value=keep]").check()
    expect(page.locator("#parts-plan")).to_contain_text("leaves out Drums")
    answer, fields = click_roll(page)
    assert fields["mute"] == "drums" and "add_part" not in fields, fields
    assert answer.ok, answer.text()
    body = answer.json()
    assert body["prompt"]["parts"], body["prompt"]
    for part in body["prompt"]["parts"]:  # the server's tracks are the page's, note for note
        row = page.locator(f"#part-list .part[data-name='{part['name']}']")
        expect(row.locator(".part-notes")).to_have_text(re.compile(rf"^{part['notes']} notes?$"))
    cards = page.locator("#cards .card")
    expect(cards).to_have_count(2)
    expect(page.locator("#history li").first).to_contain_text("muted Drums")
    for i, v in enumerate(body["variations"]):
        expect(cards.nth(i).locator("a.download-new")).to_have_attribute("href", v["midi_new"])
        expect(cards.nth(i).locator("a.download")).to_have_attribute("href", v["midi"])

    # the whole variation: no drums (muted), the bass and the piano kept; the clip: new notes alone, no prompt track
    with page.expect_download() as download:
        cards.nth(0).locator("a.download").click()
    download.value.save_as(tmp_path / "whole.mid")
    whole = read_midi(tmp_path / "whole.mid")
    assert not any(p.is_drum for p in whole.parts), whole.parts
    assert {0, 33} <= {p.program for p in whole.parts}, whole.parts
    with page.expect_download() as download:
        cards.nth(0).locator("a.download-new").click()
    download.value.save_as(tmp_path / "clip.mid")
    import symusic  # the clip may hold no notes (a tiny test model): read it as it is

    clip = symusic.Score(str(tmp_path / "clip.mid"))
    assert not any(t.name.startswith("prompt:") or t.is_drum for t in clip.tracks), clip.tracks
    assert {t.program for t in clip.tracks if len(t.notes)} <= {0, 33}, clip.tracks

    # an error after it: the cards on show are marked as an earlier roll's
    page.fill("#pitch-lo", "84")
    page.fill("#pitch-hi", "48")
    page.click("#roll")
    expect(page.locator("#error")).to_contain_text("reversed")
    expect(page.locator("#stale-note")).to_be_visible()
    expect(page.locator("#results")).to_have_class(re.compile(r"\bstale\b"))
    page.fill("#pitch-lo", "")
    page.fill("#pitch-hi", "")
    page.fill("#keep-bars", "1")  # re-roll from bar K: the history says K
    page.click("#reroll")
    expect(page.locator("#history li")).to_have_count(2)
    expect(page.locator("#history li").first).to_contain_text("K=1")
    expect(page.locator("#stale-note")).to_be_hidden()
    assert hosts <= {urlsplit(server).netloc, ""}, hosts
    assert not errors, errors
    page.close()


def test_docs_work_offline(browser, server):
    """Issue 20.5: /docs loaded Swagger UI from a CDN (a blank page offline); now its files come from this server.
    Every request to another host is refused here, as on a machine without network."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    own = urlsplit(server).netloc
    refused = []

    def offline(route):
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.goto(f"{server}/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    for path in ("/api/rolls", "/api/continue", "/api/health"):
        expect(page.locator(f".opblock-summary-path[data-path='{path}']").first).to_be_visible()
    assert refused == []
    page.close()


def test_a_whole_song_is_trimmed_not_refused(browser, server, tmp_path):
    """Issue 20.2-20.4: a whole multi-track song dropped on the page rolls on from its last bars that fit the
    context, and the page says which bars the model read; bars chosen in the two fields are the prompt, and the
    card's clip holds the new notes alone, from bar 1, on the song's instruments."""
    song = mf.make_midi(tmp_path / "song.mid", [(i * 240, i * 240 + 200, 60 + (i * 7) % 12, 80) for i in range(400)],
                        extra_tracks=[{"notes": [(i * 960, i * 960 + 900, 36 + i % 5, 90) for i in range(100)],
                                       "program": 33, "name": "Bass"}])
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page.add_init_script(RECORD_FORMS)
    page.goto(server)
    expect(page.locator("#model-info")).to_contain_text("params")
    data = page.evaluate_handle(DROP, ["song.mid", list(song.read_bytes())])
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})
    expect(page.locator("#part-list .part")).to_have_count(2)
    page.click("#roll")
    expect(page.locator("#prompt-bars-used")).to_contain_text("the last bars that fit its context")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#cards .card").first).to_be_visible()

    # the roll shows the bars the model read (a bar under them); with nothing chosen, nothing is greyed
    assert page.evaluate("state.readBars[1]") == page.evaluate("state.promptBars")

    # bars 3-4 chosen by a drag across the prompt's roll (from the middle of bar 4 back to bar 3): the fields
    # follow; the model reads those bars (the last that fit) and rolls what comes after bar 4
    bars = page.evaluate("state.promptBars")
    box = page.locator("#prompt-roll").bounding_box()
    at = lambda bar: (box["x"] + (bar - 0.5) / bars * box["width"], box["y"] + box["height"] / 2)  # noqa: E731
    page.mouse.move(*at(4))
    page.mouse.down()
    page.mouse.move(*at(3.2), steps=4)
    page.mouse.up()
    expect(page.locator("#bars-from")).to_have_value("3")
    expect(page.locator("#bars-to")).to_have_value("4")
    page.fill("#length", "2")
    page.select_option("#unit", "bars")
    answer, fields = click_roll(page)
    assert fields["prompt_bars"] == "3-4", fields
    assert answer.ok, answer.text()
    body = answer.json()
    first, last = body["prompt"]["bars"]  # the test model's context (128 tokens) may hold bar 4 alone
    # bars 3-4 hold 20 notes (8 + 2 a bar); trimmed: some did not fit (the kept ones start in bar `first`)
    assert last == 4 and first in (3, 4) and body["prompt"]["trimmed"] is (body["prompt"]["notes"] < 20), body["prompt"]
    expect(page.locator("#prompt-bars-used")).to_contain_text(
        f"the model read bars {first}-4 ({body['prompt']['notes']} notes)")

    # the clip: only the new notes, from bar 1, on the song's instruments, no prompt track
    with page.expect_download() as download:
        page.locator("#cards .card").first.locator("a.download-new").click()
    download.value.save_as(tmp_path / "clip.mid")
    import symusic

    clip = symusic.Score(str(tmp_path / "clip.mid"))
    played = [t for t in clip.tracks if len(t.notes)]
    assert played, clip.tracks
    assert not any(t.name.startswith("prompt:") for t in clip.tracks), clip.tracks
    assert {t.program for t in played} <= {0, 33}, clip.tracks
    end = max(n.time for t in played for n in t.notes)
    assert end < 8 * clip.ticks_per_quarter, end  # the 2 new bars from bar 1 (in the variation the prompt's come first)
    page.close()
