"""The anatomy page in a real headless Chromium: a screenshot, and highlighting through the DOM.

Byte offsets expected here are the RFC layouts': an IPv4 header without options is 20 bytes
(RFC 791 §3.1) with the TTL at byte 8; an ICMP error's header is 8 bytes (RFC 792), so the
quoted IPv4 header starts at byte 28 and the quoted UDP header (RFC 768) at byte 48.
"""

from __future__ import annotations

import dataclasses
import struct

import pytest
from cdp_browser import Browser, find_chromium
from smtpd_fixtures import skip_or_fail

from compare.anatomy import explain
from compare.anatomy.build import Params, build
from compare.anatomy.render_html import render_html


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        skip_or_fail("needs headless Chromium for the anatomy page (bash .ci/browser-setup)")
    b = Browser(binary)
    yield b
    b.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    path = tmp_path_factory.mktemp("anatomy") / "time-exceeded.html"
    anatomy = explain(build(Params(kind="time-exceeded", probe="udp")))
    path.write_text(render_html(anatomy), encoding="utf-8")
    return path


def _lit(browser: Browser, cls: str = "hl") -> list[int]:
    return browser.js(
        f"Array.from(document.querySelectorAll('.byte.{cls}')).map(e => +e.id.slice(1))"
    )


def _has(browser: Browser, selector: str, cls: str = "hl") -> list[bool]:
    found = f"Array.from(document.querySelectorAll({selector!r}))"
    return browser.js(f"{found}.map(e => e.classList.contains({cls!r}))")


def _rest(browser: Browser) -> None:
    browser.hover("h1")  # the mouse leaves every field and byte


def test_screenshot_is_a_real_png(browser, page, tmp_path):
    browser.open(page)
    shot = tmp_path / "anatomy.png"
    data = browser.screenshot(shot)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR (PNG spec §11.2.2)
    assert (width, height) == (1280, 1600)
    assert shot.stat().st_size > 20_000  # a page with diagrams, not a blank frame


def test_page_loads_nothing_from_the_network(browser, page):
    browser.open(page)
    assert browser.js("performance.getEntriesByType('resource').length") == 0
    assert browser.js("document.querySelectorAll('[src], link[href]').length") == 0


def test_hovering_a_field_lights_its_bytes(browser, page):
    browser.open(page)
    browser.hover('.cell[data-name="IPv4.ttl"]')
    assert _lit(browser) == [8]
    assert all(_has(browser, 'tr[data-name="IPv4.ttl"]'))
    browser.hover('.cell[data-name="UDP (quoted).dst_port"]')
    assert _lit(browser) == [50, 51]
    browser.hover('tr[data-name="IPv4 (quoted).src"]')  # a table row works the same way
    assert _lit(browser) == [40, 41, 42, 43]
    _rest(browser)
    assert _lit(browser) == []
    assert browser.js("document.querySelectorAll('.hl').length") == 0


def test_hovering_a_byte_lights_its_fields(browser, page):
    browser.open(page)
    browser.hover("#b0")  # version and IHL share byte 0
    assert _has(browser, '.cell[data-name="IPv4.version"]') == [True]
    assert _has(browser, '.cell[data-name="IPv4.ihl"]') == [True]
    assert _has(browser, '.cell[data-name="IPv4.dscp"]') == [False]
    browser.hover("#b6")  # flags and the first bits of the fragment offset
    for name in ("flag_reserved", "flag_df", "flag_mf", "fragment_offset"):
        assert _has(browser, f'.cell[data-name="IPv4.{name}"]') == [True], name
    assert _lit(browser) == [6, 7]  # the fragment offset runs on into byte 7
    _rest(browser)
    assert _lit(browser) == []


def test_selecting_a_field_sticks_until_selected_again(browser, page):
    browser.open(page)
    browser.click('tr[data-name="ICMP.checksum"]')
    _rest(browser)
    assert _lit(browser, "sel") == [22, 23]
    assert _has(browser, '.cell[data-name="ICMP.checksum"]', "sel") == [True]
    browser.click("#b22")  # the same field, from its byte: selection toggles off
    assert _lit(browser, "sel") == []


def test_a_disagreement_is_marked_on_the_page(browser, tmp_path):
    anatomy = explain(build(Params()))
    ttl = anatomy.find("IPv4", "ttl")
    anatomy.fields[anatomy.fields.index(ttl)] = dataclasses.replace(ttl, value=7, agree=False)
    path = tmp_path / "bad.html"
    path.write_text(render_html(anatomy), encoding="utf-8")
    browser.open(path)
    assert _has(browser, '.cell[data-name="IPv4.ttl"]', "disagree") == [True]
    assert _has(browser, '.cell[data-name="IPv4.src"]', "disagree") == [False]
    assert "DISAGREE" in browser.js("document.getElementById('summary').textContent")
