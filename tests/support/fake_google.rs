//! A real HTTP/1.1 server on loopback that speaks both of Google's places formats and records
//! every request, for tests and benchmarks. Small on purpose: one request per connection
//! (`Connection: close`), `Content-Length` bodies only, which is all reqwest needs.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string, still percent-encoded.
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter, decoded (form encoding: `+` is a space, `%XX` a byte).
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            (decode(n) == name).then(|| decode(v))
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// What the server answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn raw(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Responder = Box<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// The server; stops when dropped.
pub struct FakeGoogle {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    responder: Arc<Mutex<Arc<Responder>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGoogle {
    /// Starts a server answering GETs in the legacy format and POSTs in the new one, each
    /// with 20 places.
    pub async fn start() -> FakeGoogle {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Mutex<Arc<Responder>>> =
            Arc::new(Mutex::new(Arc::new(Box::new(default_reply))));
        let task = tokio::spawn({
            let requests = requests.clone();
            let responder = responder.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let requests = requests.clone();
                    let responder = responder.clone();
                    tokio::spawn(async move {
                        let _ = serve(stream, requests, responder).await;
                    });
                }
            }
        });
        FakeGoogle {
            addr,
            requests,
            responder,
            task,
        }
    }

    pub fn legacy_url(&self) -> String {
        format!("http://{}/maps/api/place/nearbysearch/json", self.addr)
    }

    pub fn new_url(&self) -> String {
        format!("http://{}/v1/places:searchNearby", self.addr)
    }

    /// Answers every later request with `reply`.
    pub fn reply_with(&self, reply: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.responder.lock().unwrap() = Arc::new(Box::new(reply));
    }

    /// Goes back to the default answers.
    pub fn reply_normally(&self) {
        self.reply_with(default_reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// 20 places in whichever format the request's method calls for.
pub fn default_reply(request: &Recorded) -> Reply {
    if request.method == "POST" {
        Reply::json(200, new_answer(20))
    } else {
        Reply::json(200, legacy_answer(20))
    }
}

pub fn legacy_answer(count: usize) -> Value {
    let results: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "geometry": { "location": { "lat": 34.06 + i as f64 / 1000.0, "lng": -118.44 } },
                "icon": "https://example.invalid/icon.png",
                "name": format!("Legacy Place {i}"),
                "place_id": format!("legacy-{i}"),
                "types": ["cafe", "food"],
                "vicinity": format!("{i} Westwood Blvd, Los Angeles"),
            })
        })
        .collect();
    json!({
        "html_attributions": [],
        "next_page_token": "page-two",
        "results": results,
        "status": if count == 0 { "ZERO_RESULTS" } else { "OK" },
    })
}

pub fn new_answer(count: usize) -> Value {
    let places: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "id": format!("new-{i}"),
                "displayName": { "text": format!("New Place {i}"), "languageCode": "en" },
                "location": { "latitude": 34.06 + i as f64 / 1000.0, "longitude": -118.44 },
                "types": ["restaurant", "food"],
                "shortFormattedAddress": format!("{i} Gayley Ave, Los Angeles"),
                "rating": 4.5,
                "userRatingCount": 100 + i,
                "businessStatus": "OPERATIONAL",
            })
        })
        .collect();
    if count == 0 {
        json!({})
    } else {
        json!({ "places": places })
    }
}

async fn serve(
    mut stream: TcpStream,
    requests: Arc<Mutex<Vec<Recorded>>>,
    responder: Arc<Mutex<Arc<Responder>>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let recorded = Recorded {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    };
    requests.lock().unwrap().push(recorded.clone());
    let respond = responder.lock().unwrap().clone();
    let reply = respond(&recorded);
    tokio::time::sleep(reply.delay).await;
    let response = format!(
        "HTTP/1.1 {} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
