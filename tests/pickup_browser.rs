//! The pickup portal in a real browser: headless Chromium (Debian's
//! `chromium`) opens the link from the notification, asks for a code,
//! types the code read from the recipient's MX, submits with the keyboard
//! and shows the message; a screenshot of the message page is saved under
//! the target directory and its path printed; a reply typed on the page
//! reaches the sender's MX.
//!
//! The portal needs no JavaScript, so the browser only loads pages and
//! submits forms (focus, type, Enter), as a person with a keyboard would.
//! Without Chromium the test fails, saying how to install it.

#[path = "common/chromium.rs"]
mod chromium;
mod common;
#[path = "common/portal.rs"]
mod portal;

use std::net::{IpAddr, Ipv4Addr};

use chromium::{Chromium, Options};
use portal::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_a_pickup_with_the_emailed_code() {
    // The organization's logo (SVG) must show under the pages' CSP.
    let logo_dir = tempfile::tempdir().unwrap();
    let logo = logo_dir.path().join("logo.svg");
    std::fs::write(
        &logo,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"40\" height=\"40\"><rect width=\"40\" height=\"40\" fill=\"#0b5394\"/></svg>",
    )
    .unwrap();
    let s = setup(&format!("logo_file = \"{}\"\n", logo.display())).await;
    let mut browser = Chromium::launch(
        &Options::default()
            .map_host("portal.ward.test", IpAddr::V4(Ipv4Addr::LOCALHOST))
            .trust_spki(&s.cert.spki_der),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let url = s.send_and_get_link().await;
    let tab = browser.new_tab().await;
    // A phone: the pages must fit its width.
    browser.phone(&tab, 390, 844).await;

    // The link page: nothing about the message, a button for a code.
    browser.navigate(&tab, &url).await;
    let text = browser.text(&tab).await;
    assert!(text.contains("You have a secure message"), "{text}");
    assert_no_planted("the link page", text.as_bytes());
    assert_fits_and_labelled(&mut browser, &tab, "the link page").await;
    assert!(text.contains("St. Example Hospital"), "the organization's name");
    let logo_width = browser
        .eval(&tab, "document.querySelector('img.logo').naturalWidth")
        .await;
    assert_eq!(logo_width, 40, "the logo loaded");
    // Tab reaches the first control, which shows a focus ring.
    browser.press(&tab, "Tab").await;
    let focused = browser
        .eval(
            &tab,
            "document.activeElement.tagName + ' ' + getComputedStyle(document.activeElement).outlineStyle",
        )
        .await;
    assert_eq!(focused, "BUTTON solid", "keyboard focus");

    // "Email me a code", by keyboard.
    browser.focus(&tab, "form[action$='/code'] button").await;
    browser.submit_with_enter(&tab).await;
    let text = browser.text(&tab).await;
    assert!(text.contains("We emailed you a code"), "{text}");
    let got = s.plain.wait_for(2, LONG).await;
    let code = code_in(&got[1].data);

    // Type the code and press Enter in the field.
    browser.focus(&tab, "#code").await;
    browser.type_text(&tab, &code).await;
    browser.submit_with_enter(&tab).await;
    let text = browser.text(&tab).await;
    assert!(text.contains(SUBJECT), "the message page: {text}");
    assert!(text.contains("Patient Jane Roe"), "the body");
    assert!(text.contains("pathology-report.pdf"), "the attachment");
    let title = browser.eval(&tab, "document.title").await;
    assert_no_planted("the page title", title.to_string().as_bytes());
    // The sanitized HTML body ran nothing and loaded nothing remote.
    let scripts = browser
        .eval(&tab, "document.querySelectorAll('script, img[src^=http]').length")
        .await;
    assert_eq!(scripts, 0);
    // The session cookie is not readable by scripts.
    assert_eq!(browser.eval(&tab, "document.cookie").await, "");
    assert_fits_and_labelled(&mut browser, &tab, "the message page").await;

    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pickup-message-page.png");
    browser.screenshot(&tab, &path).await;
    assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    println!("screenshot of the message page: {}", path.display());

    // A reply, typed and sent with the keyboard (the browser sends the
    // form's anti-forgery token), reaches the sender's MX.
    browser.focus(&tab, "#reply").await;
    browser.type_text(&tab, "Received, thank you.").await;
    browser.focus(&tab, "form[action$='/reply'] button").await;
    browser.submit_with_enter(&tab).await;
    let text = browser.text(&tab).await;
    assert!(text.contains("Your reply was sent."), "{text}");
    let got = s.secure.wait_for(1, LONG).await;
    assert_eq!(got[0].rcpt_to, vec!["dr@hospital.example".to_string()]);
    assert!(String::from_utf8_lossy(&got[0].data).contains("Received, thank you."));

    s.ward
        .line(&["pickup opened for the first time", "to=b@plain.test"], LONG)
        .await;
    assert_no_planted("the log", s.ward.log().as_bytes());
}

/// The page fits the phone's width (no sideways scrolling) and every form
/// field has a label.
async fn assert_fits_and_labelled(b: &mut Chromium, tab: &chromium::Tab, what: &str) {
    let overflow = b
        .eval(
            tab,
            "document.documentElement.scrollWidth - document.documentElement.clientWidth",
        )
        .await;
    assert_eq!(overflow, 0, "{what} is wider than the phone");
    let unlabelled = b
        .eval(
            tab,
            "[...document.querySelectorAll('input, textarea, select')]\
             .filter(e => e.type !== 'hidden' && e.labels.length === 0).length",
        )
        .await;
    assert_eq!(unlabelled, 0, "{what} has a form field without a label");
}

/// The 8-digit code in a code mail.
fn code_in(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .expect("a code in the mail")
        .to_string()
}
