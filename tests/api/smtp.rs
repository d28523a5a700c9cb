//! A real SMTP server for the tests (plain SMTP over TCP on loopback, as small as the
//! protocol allows), and reading what it received. Recipients whose local part starts with "reject-permanent"
//! are refused with 550, "reject-temporary" with 451.

use std::{
    io,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mail_parser::{Message, MessageParser, MimeHeaders};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use crate::helpers::unused_port;

pub struct SmtpSink {
    pub port: u16,
    folder: TempDir,
}

/// A message as the SMTP server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub to: String,
    pub subject: String,
    pub message_id: String,
    pub text: String,
    pub html: String,
    pub content_type: String,
}

/// Stores each accepted message as `NNNNNN.eml` in arrival order.
#[derive(Clone)]
struct Mailbox {
    folder: PathBuf,
    count: Arc<AtomicU64>,
}

impl Mailbox {
    /// The answer to `RCPT TO:<address>`.
    fn recipient(address: &str) -> &'static str {
        let local = address
            .trim()
            .trim_start_matches('<')
            .split('@')
            .next()
            .unwrap_or_default();
        if local.starts_with("reject-permanent") {
            "550 5.1.1 no such mailbox"
        } else if local.starts_with("reject-temporary") {
            "451 4.3.0 try again later"
        } else {
            "250 2.1.5 ok"
        }
    }

    fn store(&self, message: &[u8]) -> &'static str {
        let number = self.count.fetch_add(1, Ordering::SeqCst);
        let partial = self.folder.join(format!(".{number:06}.partial"));
        let stored = std::fs::write(&partial, message)
            .and_then(|()| std::fs::rename(&partial, self.folder.join(format!("{number:06}.eml"))));
        match stored {
            Ok(()) => "250 2.0.0 queued",
            Err(_) => "451 4.3.0 cannot store the message",
        }
    }

    /// One SMTP session, plain text (RFC 5321's minimum: no TLS, no authentication).
    async fn session(self, stream: TcpStream) -> io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut say = async |reply: &str| write.write_all(format!("{reply}\r\n").as_bytes()).await;
        say("220 smtp.test ESMTP").await?;
        let mut line = Vec::new();
        loop {
            line.clear();
            if lines.read_until(b'\n', &mut line).await? == 0 {
                return Ok(());
            }
            let command = String::from_utf8_lossy(&line).trim_end().to_owned();
            let verb = command
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let reply = match verb.as_str() {
                "EHLO" => "250-smtp.test\r\n250-8BITMIME\r\n250 SMTPUTF8",
                "HELO" => "250 smtp.test",
                "MAIL" | "RSET" | "NOOP" => "250 2.0.0 ok",
                "RCPT" => Self::recipient(command.split_once(':').map_or("", |(_, a)| a)),
                "DATA" => {
                    say("354 end with <CRLF>.<CRLF>").await?;
                    let mut message = Vec::new();
                    loop {
                        line.clear();
                        if lines.read_until(b'\n', &mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == b".\r\n" || line == b".\n" {
                            break;
                        }
                        // A leading dot was doubled by the sender.
                        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
                        message.extend_from_slice(unstuffed);
                    }
                    self.store(&message)
                }
                "QUIT" => {
                    say("221 2.0.0 bye").await?;
                    return Ok(());
                }
                _ => "502 5.5.2 command not implemented",
            };
            say(reply).await?;
        }
    }
}

impl SmtpSink {
    /// A port for the server, which is not listening yet: mail sent there is refused.
    pub fn reserve() -> Self {
        Self {
            port: unused_port(),
            folder: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub async fn started() -> Self {
        let mut sink = Self::reserve();
        sink.start().await;
        sink
    }

    /// Starts listening; the server lives as long as the test's runtime.
    pub async fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the SMTP port");
        let mailbox = Mailbox {
            folder: self.folder.path().to_owned(),
            count: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(mailbox.clone().session(stream));
            }
        });
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        let mut files: Vec<_> = std::fs::read_dir(self.folder.path())
            .expect("read the mail folder")
            .map(|e| e.expect("folder entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| parse(&std::fs::read(path).expect("read message")))
            .collect()
    }

    /// Waits until at least `n` messages arrived, then gives the sender a moment more to
    /// show any extra copy.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.received().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} messages arrived",
                self.received().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.received()
    }
}

pub fn parse(bytes: &[u8]) -> Received {
    let message: Message<'_> = MessageParser::default()
        .parse(bytes)
        .expect("a MIME message");
    let to = message
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("a To address")
        .to_owned();
    let content_type = message
        .content_type()
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
        .unwrap_or_default();
    Received {
        to,
        subject: message.subject().unwrap_or_default().to_owned(),
        message_id: message.message_id().unwrap_or_default().to_owned(),
        text: message.body_text(0).unwrap_or_default().into_owned(),
        html: message.body_html(0).unwrap_or_default().into_owned(),
        content_type,
    }
}
