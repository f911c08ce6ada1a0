//! Headless Chromium running one page to its verdict ([`burrow_lab::chromium`]), from async
//! tests: the page's relay runs in the test's runtime, so the run waits on a blocking thread.

#[allow(unused_imports)] // each test binary compiles this module; the browser tests use them
pub(crate) use burrow_lab::chromium::{chromium_present, Run};

/// [`burrow_lab::chromium::run_page`] on a blocking thread.
pub(crate) async fn run_page(html: &str) -> Run {
    let html = html.to_string();
    tokio::task::spawn_blocking(move || burrow_lab::chromium::run_page(&html))
        .await
        .expect("chromium thread")
        .expect("running chromium")
}
