"""The web UI in a real headless Chromium (Debian's), driven by Playwright.

Run by cli_ui.rs::the_pages_work_in_a_real_browser, which builds the
repository (a clean backup, then an attack flagged as suspicious), starts
`rewind ui`, and afterwards checks on disk what this script downloaded and
restored. Arguments:

  LOGIN_URL CHROMIUM SCREENSHOT_DIR DOCS_PATH DOWNLOAD_TO RESTORE_TO IN_PLACE

Each page is saved as a screenshot in SCREENSHOT_DIR.
"""

import os
import sys

from playwright.sync_api import expect, sync_playwright

login, chromium, shots, docs, downloaded, restored, in_place = sys.argv[1:8]
base = login.split("/login")[0]
dialogs = []


def shot(page, name):
    page.screenshot(path=os.path.join(shots, name + ".png"), full_page=True)


def step(msg):
    print("step:", msg, flush=True)


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    step("log in with the printed token")
    page.goto(login)
    expect(page.locator("h1")).to_have_text("Timeline")

    step("the suspicious snapshot is red, with the scan's reasons")
    alert = page.locator(".alert").first
    expect(alert).to_contain_text("looks like a ransomware attack")
    expect(page.locator("tr.suspicious")).to_have_count(1)
    expect(page.locator("tr.suspicious .badge.bad")).to_have_text("Suspicious")
    expect(page.locator("tr.suspicious ul.reasons li").first).to_be_visible()
    expect(page.locator("a.day.bad")).to_have_count(1)
    shot(page, "1-timeline")

    step("open the last clean snapshot, then a folder")
    alert.locator("p a").first.click()
    expect(page.locator("h1")).to_have_text(os.path.dirname(docs))
    page.get_by_role("link", name="docs/", exact=True).click()
    expect(page.locator("h1")).to_have_text(docs)
    shot(page, "2-folder")

    step("download a file")
    row = page.locator("tr", has=page.get_by_role("link", name="budget.xlsx", exact=True))
    with page.expect_download() as d:
        row.get_by_role("link", name="Download").click()
    d.value.save_as(downloaded)

    step("every version of that file")
    page.get_by_role("link", name="budget.xlsx", exact=True).click()
    expect(page.locator("h1")).to_have_text("Versions of budget.xlsx")
    expect(page.locator("a.download")).to_have_count(1)
    shot(page, "3-versions")
    page.go_back()

    step("restore a folder")
    page.get_by_role("link", name="Restore this folder").click()
    page.fill("#target", restored)
    page.check("input[value=always]")
    page.get_by_role("button", name="Start the restore").click()
    expect(page.locator("h1")).to_have_text("Restore finished", timeout=60000)
    expect(page.locator("#outcome")).to_contain_text("Restored")
    shot(page, "4-restore-finished")

    step("restore the last clean state, from the alert")
    page.goto(base + "/")
    page.get_by_role("link", name="Restore the last clean state").click()
    expect(page.locator("h1")).to_have_text("Restore the last clean state")
    shot(page, "5-last-clean-form")
    page.fill("#target", in_place)
    page.check("input[value=always]")
    page.check("input[name=delete]")
    page.get_by_role("button", name="Start the restore").click()
    expect(page.locator("h1")).to_have_text("Restore finished", timeout=60000)

    step("search: a hostile name is shown as text")
    page.get_by_role("link", name="Search", exact=True).click()
    page.fill("#q", "script")
    page.get_by_role("button", name="Search every snapshot").click()
    expect(page.get_by_role("link", name=docs + "/<script>alert(1)")).to_be_visible()
    assert page.locator("script").count() == 0, "a name became a script element"
    shot(page, "6-search")

    step("the changes of the attack")
    page.goto(base + "/")
    page.locator("tr.suspicious").get_by_role("link", name="Changes").click()
    expect(page.locator("h1")).to_contain_text("Changes from")
    expect(page.locator("main")).to_contain_text("40 added, 40 removed")
    shot(page, "7-changes")

    step("compare any two snapshots")
    page.goto(base + "/")
    page.get_by_role("button", name="Show the changes").click()
    expect(page.locator("main")).to_contain_text("40 added, 40 removed")

    step("the repository page")
    page.get_by_role("link", name="Repository", exact=True).click()
    expect(page.locator("h1")).to_have_text("Repository")
    shot(page, "8-repository")

    step("without the token: the login page, and requests refused")
    other = browser.new_context()
    p2 = other.new_page()
    p2.goto(base + "/stats")
    expect(p2.locator("h1")).to_have_text("Log in")
    shot(p2, "9-login")
    r = other.request.get(base + "/stats", max_redirects=0)
    assert r.status == 303, r.status
    p2.goto(login)
    expect(p2.locator(".alert")).to_contain_text("works once")

    step("log out")
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("h1")).to_have_text("Log in")

    assert not dialogs, "a dialog opened: %r" % dialogs
    browser.close()
    print("ok")
