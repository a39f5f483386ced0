//! The offline provider: real places from a shipped dataset, no network and no key.
//!
//! The dataset (`data/places.tsv.gz`, described in `data/README.md`) is compiled into the binary,
//! so a node answers WHATSAT from any directory; `places.dataset` may name another file of the
//! same columns, gzip'd or not. Loading it (decompress, parse 280k rows, index) takes a
//! noticeable fraction of a second, so it runs on a blocking thread started by
//! [`Offline::start`]: the node is ready at once and the first queries wait for the load.
//!
//! The index is a grid of [`CELL_DEG`]-degree cells over latitude and longitude, stored flat:
//! places sorted by cell, plus each cell's first index (a compressed sparse row layout, one
//! `u32` per cell). A query visits the cells that can hold a point within the radius and then
//! checks the great-circle distance exactly, so the grid only decides what to look at, never
//! what is found. The cells' longitude range wraps at the antimeridian, and a circle that
//! reaches a pole visits whole rows of cells, because near a pole every longitude is close.
//!
//! Ranking is by prominence, most prominent first: a town or neighbourhood's GeoNames
//! population; an airport counts as [`AIRPORT_PROMINENCE`] people (OurAirports has no
//! population, and most of its 45k entries are small airfields: one ranks above a hamlet and
//! below any real town). Ties go to the nearer place, then to the smaller `place_id`, so every
//! answer is deterministic.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::document::{Document, Failure};
use crate::protocol::location::Location;

/// The shipped dataset, gzip'd TSV.
static EMBEDDED: &[u8] = include_bytes!("../../data/places.tsv.gz");

/// The columns a dataset must have, in order.
const HEADER: &str = "place_id\tname\tlat\tlng\ttypes\tvicinity\tpopulation";

/// The side of a grid cell in degrees. Half a degree is about 55 km of latitude, so a query
/// of the largest radius (50 km) visits 2 to 3 rows of cells away from the poles; finer cells
/// cost memory (one `u32` each) without saving much scanning.
pub const CELL_DEG: f64 = 0.5;
const ROWS: usize = (180.0 / CELL_DEG) as usize;
const COLS: usize = (360.0 / CELL_DEG) as usize;

/// The population an airport counts as when ranking.
pub const AIRPORT_PROMINENCE: u64 = 1_000;

/// The mean Earth radius (IUGG), in metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Credits carried by every offline answer, as the sources' licences ask.
pub const ATTRIBUTIONS: [&str; 2] = [
    "Place data from <a href=\"https://www.geonames.org/\">GeoNames</a>, licensed under CC BY 4.0",
    "Airport data from <a href=\"https://ourairports.com/\">OurAirports</a>, public domain",
];

/// Where the dataset comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The copy compiled into the binary.
    Embedded,
    /// A file named in the config.
    File(PathBuf),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Embedded => "embedded data/places.tsv.gz".to_owned(),
            Source::File(path) => path.display().to_string(),
        }
    }
}

/// A byte range of [`Dataset::text`].
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

/// One place, its strings kept in the dataset's text arena: one allocation for all 280k
/// names instead of three per place.
#[derive(Clone, Copy, Debug)]
struct Place {
    lat: f64,
    lng: f64,
    prominence: u64,
    place_id: Span,
    name: Span,
    vicinity: Span,
    /// Index into [`Dataset::types`].
    types: u32,
}

/// A place found by a query.
#[derive(Clone, Debug, PartialEq)]
pub struct Found<'a> {
    pub place_id: &'a str,
    pub name: &'a str,
    pub lat: f64,
    pub lng: f64,
    pub types: &'a [String],
    pub vicinity: &'a str,
    /// Population, or the equivalent for an airport.
    pub prominence: u64,
    /// Great-circle distance from the query point.
    pub distance_m: f64,
}

/// The loaded, indexed dataset. Immutable once built.
pub struct Dataset {
    /// Places ordered by grid cell.
    places: Vec<Place>,
    /// `cell_starts[c]..cell_starts[c + 1]` are the places of cell `c` (row-major).
    cell_starts: Vec<u32>,
    /// Every place's id, name and vicinity, back to back.
    text: String,
    /// The distinct `types` lists (a handful), shared by all places.
    types: Vec<Vec<String>>,
}

impl Dataset {
    /// Loads the dataset from its source: reads, decompresses if gzip'd, parses and indexes.
    pub fn load(source: &Source) -> Result<Dataset, String> {
        let bytes = match source {
            Source::Embedded => std::borrow::Cow::Borrowed(EMBEDDED),
            Source::File(path) => std::borrow::Cow::Owned(
                std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
            ),
        };
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
                .map_err(|e| format!("{}: {e}", source.describe()))?;
            text
        } else {
            String::from_utf8(bytes.into_owned())
                .map_err(|e| format!("{}: not UTF-8: {e}", source.describe()))?
        };
        Dataset::parse(&text).map_err(|e| format!("{}: {e}", source.describe()))
    }

    /// Parses TSV text with the columns of `data/places.tsv.gz` and builds the index.
    pub fn parse(tsv: &str) -> Result<Dataset, String> {
        let mut lines = tsv.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("line 1: expected the header {HEADER:?}"));
        }
        let mut text = String::new();
        let mut types: Vec<Vec<String>> = Vec::new();
        let mut places = Vec::new();
        for (number, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            let place = parse_row(line, &mut text, &mut types)
                .map_err(|why| format!("line {}: {why}", number + 2))?;
            places.push(place);
        }
        if u32::try_from(text.len()).is_err() || u32::try_from(places.len()).is_err() {
            return Err("too large for the index (more than 4 GiB of text)".to_owned());
        }
        places.sort_by_key(|p| cell(p.lat, p.lng));
        let mut cell_starts = vec![0u32; ROWS * COLS + 1];
        for place in &places {
            cell_starts[cell(place.lat, place.lng) + 1] += 1;
        }
        for c in 0..ROWS * COLS {
            cell_starts[c + 1] += cell_starts[c];
        }
        text.shrink_to_fit();
        Ok(Dataset {
            places,
            cell_starts,
            text,
            types,
        })
    }

    /// How many places the dataset holds.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// Whether the dataset holds no place at all.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// The `limit` most prominent places within `metres` of `location`, most prominent first.
    pub fn nearby(&self, location: Location, metres: f64, limit: usize) -> Vec<Found<'_>> {
        let mut found = Vec::new();
        for range in cells_near(location, metres) {
            let (start, end) = (self.cell_starts[range.start], self.cell_starts[range.end]);
            self.collect(start as usize..end as usize, location, metres, &mut found);
        }
        rank(&mut found, limit);
        found
    }

    /// The same answer as [`Dataset::nearby`], found by examining every place: the reference
    /// the index is tested and measured against.
    pub fn scan(&self, location: Location, metres: f64, limit: usize) -> Vec<Found<'_>> {
        let mut found = Vec::new();
        self.collect(0..self.places.len(), location, metres, &mut found);
        rank(&mut found, limit);
        found
    }

    fn collect<'a>(
        &'a self,
        indices: std::ops::Range<usize>,
        location: Location,
        metres: f64,
        found: &mut Vec<Found<'a>>,
    ) {
        for place in &self.places[indices] {
            let distance_m = distance(location.latitude, location.longitude, place.lat, place.lng);
            if distance_m <= metres {
                found.push(Found {
                    place_id: self.str(place.place_id),
                    name: self.str(place.name),
                    lat: place.lat,
                    lng: place.lng,
                    types: &self.types[place.types as usize],
                    vicinity: self.str(place.vicinity),
                    prominence: place.prominence,
                    distance_m,
                });
            }
        }
    }

    fn str(&self, span: Span) -> &str {
        let start = span.start as usize;
        &self.text[start..start + span.len as usize]
    }
}

/// Orders by prominence (descending), then distance, then id, and keeps the first `limit`.
fn rank(found: &mut Vec<Found<'_>>, limit: usize) {
    found.sort_unstable_by(|a, b| {
        b.prominence
            .cmp(&a.prominence)
            .then(a.distance_m.total_cmp(&b.distance_m))
            .then_with(|| a.place_id.cmp(b.place_id))
    });
    found.truncate(limit);
}

/// Builds the answer document for places found.
pub fn document(found: &[Found<'_>]) -> Document {
    let results: Vec<Value> = found
        .iter()
        .map(|f| {
            // Keys in the order Google's legacy answers use (alphabetical).
            json!({
                "geometry": { "location": { "lat": f.lat, "lng": f.lng } },
                "name": f.name,
                "place_id": f.place_id,
                "types": f.types,
                "vicinity": f.vicinity,
            })
        })
        .collect();
    let status = if results.is_empty() {
        "ZERO_RESULTS"
    } else {
        "OK"
    };
    let mut document = Document::new();
    document.insert("html_attributions".into(), json!(ATTRIBUTIONS));
    document.insert("results".into(), Value::Array(results));
    document.insert("status".into(), json!(status));
    document
}

fn parse_row(line: &str, text: &mut String, types: &mut Vec<Vec<String>>) -> Result<Place, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [place_id, name, lat, lng, type_list, vicinity, population] = fields[..] else {
        return Err(format!(
            "expected 7 tab-separated fields, found {}",
            fields.len()
        ));
    };
    let lat: f64 = lat
        .parse()
        .ok()
        .filter(|l: &f64| (-90.0..=90.0).contains(l))
        .ok_or_else(|| format!("lat {lat:?} is not a latitude"))?;
    let lng: f64 = lng
        .parse()
        .ok()
        .filter(|l: &f64| (-180.0..=180.0).contains(l))
        .ok_or_else(|| format!("lng {lng:?} is not a longitude"))?;
    let population: u64 = population
        .parse()
        .map_err(|_| format!("population {population:?} is not a whole number"))?;
    let type_list: Vec<String> = type_list
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let prominence = if type_list.iter().any(|t| t == "airport") {
        population.max(AIRPORT_PROMINENCE)
    } else {
        population
    };
    let types_index = match types.iter().position(|t| *t == type_list) {
        Some(i) => i,
        None => {
            types.push(type_list);
            types.len() - 1
        }
    };
    let mut intern = |s: &str| {
        let span = Span {
            start: text.len() as u32,
            len: s.len() as u32,
        };
        text.push_str(s);
        span
    };
    Ok(Place {
        lat,
        lng,
        prominence,
        place_id: intern(place_id),
        name: intern(name),
        vicinity: intern(vicinity),
        types: types_index as u32,
    })
}

/// Great-circle distance in metres (haversine, which stays accurate for small distances).
pub fn distance(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let half_dphi = (phi2 - phi1) / 2.0;
    let half_dlambda = (lng2 - lng1).to_radians() / 2.0;
    let h = half_dphi.sin().powi(2) + phi1.cos() * phi2.cos() * half_dlambda.sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

fn row(lat: f64) -> usize {
    (((lat + 90.0) / CELL_DEG).floor().max(0.0) as usize).min(ROWS - 1)
}

/// The column of a longitude; -180 and 180 are the same meridian and share a column.
fn col(lng: f64) -> usize {
    ((((lng + 180.0) / CELL_DEG).floor() as i64).rem_euclid(COLS as i64)) as usize
}

fn cell(lat: f64, lng: f64) -> usize {
    row(lat) * COLS + col(lng)
}

/// The runs of cell numbers that can hold a point within `metres` of `location`: one run per
/// row, or two where the longitude range wraps at the antimeridian.
fn cells_near(location: Location, metres: f64) -> Vec<std::ops::Range<usize>> {
    // A hair of slack so that rounding never hides a place lying exactly on the circle.
    const SLACK_DEG: f64 = 1e-9;
    let angle = metres / EARTH_RADIUS_M;
    let angle_deg = angle.to_degrees() + SLACK_DEG;
    let (lat, lng) = (location.latitude, location.longitude);
    let (lat_lo, lat_hi) = (lat - angle_deg, lat + angle_deg);
    // Beyond a quarter of the globe nothing is gained by narrowing the longitudes; and a
    // circle that holds a pole holds points of every longitude.
    let half_width = if lat_lo <= -90.0 || lat_hi >= 90.0 || angle >= std::f64::consts::FRAC_PI_2 {
        None
    } else {
        // The widest longitude offset of a spherical cap of angular radius `angle` centred at
        // latitude `lat`: asin(sin(angle) / cos(lat)).
        let ratio = angle.sin() / lat.to_radians().cos();
        (ratio < 1.0).then(|| ratio.asin().to_degrees() + SLACK_DEG)
    };
    // One run of columns, or two where the range wraps at the antimeridian.
    let columns: [std::ops::Range<usize>; 2] = match half_width {
        Some(half) => {
            let first = ((lng - half + 180.0) / CELL_DEG).floor() as i64;
            let last = ((lng + half + 180.0) / CELL_DEG).floor() as i64;
            if last - first + 1 >= COLS as i64 {
                [0..COLS, 0..0]
            } else {
                let first = first.rem_euclid(COLS as i64) as usize;
                let last = last.rem_euclid(COLS as i64) as usize;
                if first <= last {
                    [first..last + 1, 0..0]
                } else {
                    [first..COLS, 0..last + 1]
                }
            }
        }
        None => [0..COLS, 0..0],
    };
    let mut runs = Vec::new();
    for r in row(lat_lo.max(-90.0))..=row(lat_hi.min(90.0)) {
        for c in columns.iter().filter(|c| !c.is_empty()) {
            runs.push(r * COLS + c.start..r * COLS + c.end);
        }
    }
    runs
}

/// The offline provider: a dataset loading (or loaded) in the background. Cheap to clone.
#[derive(Clone)]
pub struct Offline {
    loaded: watch::Receiver<Option<Result<Arc<Dataset>, String>>>,
}

impl Offline {
    /// Starts loading the dataset on a blocking thread and returns at once.
    pub fn start(source: Source) -> Offline {
        let (sender, loaded) = watch::channel(None);
        let load = move || {
            let started = Instant::now();
            let result = Dataset::load(&source).map(Arc::new);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match &result {
                Ok(dataset) => tracing::info!(
                    source = %source.describe(),
                    places = dataset.len(),
                    elapsed_ms,
                    "offline places loaded"
                ),
                Err(error) => tracing::error!(%error, "offline places failed to load"),
            }
            // Nobody may be listening any more (the node stopped); that is fine.
            let _ = sender.send(Some(result));
        };
        // Inside a runtime (a node) use its blocking pool; outside one (a tool, a plain test)
        // a thread of its own does the same job.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(load)),
            Err(_) => drop(std::thread::spawn(load)),
        }
        Offline { loaded }
    }

    /// The dataset, once loaded; waits for the load to finish.
    pub async fn dataset(&self) -> Result<Arc<Dataset>, Failure> {
        let mut loaded = self.loaded.clone();
        let ready = loaded.wait_for(Option::is_some).await;
        match ready.as_deref() {
            Ok(Some(Ok(dataset))) => Ok(dataset.clone()),
            Ok(Some(Err(error))) => Err(Failure::unknown(format!(
                "the offline places dataset failed to load: {error}"
            ))),
            // The loader died without a word (it panicked).
            _ => Err(Failure::unknown(
                "the offline places dataset failed to load",
            )),
        }
    }

    /// The most prominent places within `metres` of `location`, as a document.
    pub async fn fetch(&self, location: Location, metres: f64) -> Result<Document, Failure> {
        let dataset = self.dataset().await?;
        let found = dataset.nearby(location, metres, super::document::MAX_RESULTS);
        Ok(document(&found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(latitude: f64, longitude: f64) -> Location {
        Location {
            latitude,
            longitude,
        }
    }

    fn tiny() -> Dataset {
        let rows = [
            HEADER,
            "geonames:1\tWest of line\t-16.80000\t179.95000\tlocality,political\tFiji\t600",
            "geonames:2\tEast of line\t-16.80000\t-179.95000\tlocality,political\tFiji\t700",
            "ourairports:3\tPole Strip\t89.99000\t120.00000\tairport,point_of_interest,establishment\tPole\t0",
            "geonames:4\tBig Town\t-16.70000\t179.90000\tlocality,political\tFiji\t50000",
        ];
        Dataset::parse(&rows.join("\n")).unwrap()
    }

    #[test]
    fn distance_is_great_circle() {
        // One degree of latitude is about 111.2 km; across the antimeridian is no farther.
        assert!((distance(0.0, 0.0, 1.0, 0.0) - 111_195.0).abs() < 10.0);
        let across = distance(0.0, 179.9, 0.0, -179.9);
        assert!((across - 22_239.0).abs() < 10.0, "{across}");
        assert!(distance(90.0, 0.0, 90.0, 137.0) < 1e-6);
    }

    #[test]
    fn finds_across_the_antimeridian_and_ranks_by_prominence() {
        let data = tiny();
        let names: Vec<&str> = data
            .nearby(at(-16.8, 179.99), 30_000.0, 20)
            .iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["Big Town", "East of line", "West of line"]);
        let names: Vec<&str> = data
            .nearby(at(-16.8, -179.99), 10_000.0, 20)
            .iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["East of line", "West of line"]);
    }

    #[test]
    fn finds_near_the_pole_at_any_longitude() {
        let data = tiny();
        let found = data.nearby(at(90.0, 0.0), 2_000.0, 20);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "Pole Strip");
        assert_eq!(found[0].prominence, AIRPORT_PROMINENCE);
        assert!(data.nearby(at(89.9, -60.0), 1_000.0, 20).is_empty());
    }

    #[test]
    fn rejects_bad_rows_naming_the_line() {
        let bad = format!("{HEADER}\ngeonames:1\tX\t91\t0\tlocality\tV\t1");
        let error = Dataset::parse(&bad).err().unwrap();
        assert!(error.starts_with("line 2: lat"), "{error}");
        assert!(Dataset::parse("nope").is_err());
        let short = format!("{HEADER}\ngeonames:1\tX\t1");
        assert!(Dataset::parse(&short)
            .err()
            .unwrap()
            .contains("7 tab-separated"));
    }

    #[test]
    fn cells_cover_whole_rows_near_poles_and_wrap() {
        let runs = cells_near(at(89.8, 10.0), 50_000.0);
        assert!(runs.iter().any(|r| r.end - r.start == COLS));
        let runs = cells_near(at(0.0, 179.9), 50_000.0);
        assert!(runs.iter().any(|r| r.start % COLS == 0));
        assert!(runs.iter().any(|r| r.end % COLS == 0));
    }
}
