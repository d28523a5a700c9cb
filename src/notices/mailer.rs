//! Delivery of a queued notice: over SMTP, as an `.eml` file, or to the log. Each message
//! carries the notice's stable Message-ID and its queuing time as Date, so a resend is the
//! same message.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::authentication::Credentials,
};
use secrecy::ExposeSecret;

use super::templates::Letterhead;
use crate::{
    config::{EmailConfig, EmailTransport, SmtpTls},
    db::notices::NoticeRow,
};

pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    File {
        folder: PathBuf,
        from: Mailbox,
    },
    Log,
}

/// Why a notice was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: the server was unreachable, slow, or answered 4xx.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: the server answered 5xx, or the message cannot be built.
    #[error("{0}")]
    Permanent(String),
}

impl Mailer {
    pub fn from_config(config: &EmailConfig) -> anyhow::Result<Self> {
        let from = config.from_mailbox();
        Ok(match config.transport {
            EmailTransport::Log => Self::Log,
            EmailTransport::File => Self::File {
                folder: config.folder.clone(),
                from,
            },
            EmailTransport::Smtp => {
                let smtp = &config.smtp;
                let builder = match smtp.tls {
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                    SmtpTls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(Duration::from_secs(smtp.timeout_secs)));
                if !smtp.username.is_empty() {
                    builder = builder.credentials(Credentials::new(
                        smtp.username.clone(),
                        smtp.password.expose_secret().to_owned(),
                    ));
                }
                Self::Smtp {
                    transport: builder.build(),
                    from,
                }
            }
        })
    }

    /// Sends the notice, rendered under `head`.
    pub async fn send(&self, notice: &NoticeRow, head: &Letterhead) -> Result<(), SendError> {
        match self {
            Self::Smtp { transport, from } => {
                let message = message(from, notice, head)?;
                transport.send(message).await.map(drop).map_err(|e| {
                    if e.is_permanent() {
                        SendError::Permanent(e.to_string())
                    } else {
                        SendError::Transient(e.to_string())
                    }
                })
            }
            Self::File { folder, from } => {
                let bytes = message(from, notice, head)?.formatted();
                write_eml(folder, &notice.id, &bytes)
                    .await
                    .map_err(|e| SendError::Transient(format!("write {}: {e}", folder.display())))
            }
            Self::Log => {
                tracing::info!(notice_id = %notice.id, kind = %notice.kind, "notice delivered to the log");
                Ok(())
            }
        }
    }
}

/// The MIME message of a notice: plain text and HTML alternatives.
fn message(from: &Mailbox, notice: &NoticeRow, head: &Letterhead) -> Result<Message, SendError> {
    let words = super::render(notice, head);
    let to: Mailbox = notice
        .recipient
        .parse()
        .map_err(|e| SendError::Permanent(format!("recipient address is invalid: {e}")))?;
    let date =
        SystemTime::UNIX_EPOCH + Duration::from_millis(notice.created_at.max(0).unsigned_abs());
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&words.subject)
        .message_id(Some(notice.message_id.clone()))
        .date(date)
        .multipart(MultiPart::alternative_plain_html(words.text, words.html))
        .map_err(|e| SendError::Permanent(format!("message cannot be built: {e}")))
}

/// Writes `<id>.eml` whole or not at all, so a reader never sees half a message and a
/// resend replaces the file instead of adding one.
async fn write_eml(folder: &std::path::Path, id: &str, bytes: &[u8]) -> std::io::Result<()> {
    let private = folder.to_owned();
    tokio::task::spawn_blocking(move || crate::files::create_private_dir(&private)).await??;
    let partial = folder.join(format!(".{id}.eml.partial"));
    crate::files::write_private(&partial, bytes).await?;
    tokio::fs::rename(&partial, folder.join(format!("{id}.eml"))).await
}
