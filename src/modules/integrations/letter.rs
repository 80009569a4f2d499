//! What every e-mail to a customer shares: the HTML frame around its body, and the footer that
//! says why it came and where to change that (the dashboard's account page).

use maud::{DOCTYPE, Markup, html};

use crate::platform::urls::PublicUrls;

/// The account page, where a customer changes its address and report e-mail.
pub fn account_url(urls: &PublicUrls) -> String {
    format!("{}/dashboard/account", urls.base())
}

/// An advert's dashboard page.
pub fn advert_url(urls: &PublicUrls, advert: i64) -> String {
    format!("{}/dashboard/adverts/{advert}", urls.base())
}

/// The plain-text footer.
pub fn text_footer(urls: &PublicUrls, why: &str) -> String {
    format!(
        "\n-- \nreklama: {why}\nChange your address or reports: {}\n",
        account_url(urls)
    )
}

/// An HTML e-mail: `title` as its heading, `body`, and the footer. Inline styles only (mail
/// clients drop style sheets); every interpolated text is escaped by maud.
pub fn html_page(urls: &PublicUrls, title: &str, why: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
            }
            body style="margin:0;padding:24px;background:#f6f7f9;font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;color:#1d2330" {
                table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="max-width:640px;margin:0 auto;background:#ffffff;border:1px solid #e2e5ea;border-radius:6px" {
                    tr { td style="padding:24px" {
                        h1 style="font-size:20px;margin:0 0 16px" { (title) }
                        (body)
                        p style="margin:24px 0 0;font-size:12px;color:#6b7280" {
                            "reklama: " (why) " "
                            a href=(account_url(urls)) style="color:#6b7280" { "Change your address or reports" }
                            "."
                        }
                    } }
                }
            }
        }
    }
    .into_string()
}
