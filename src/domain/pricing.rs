//! The pricing catalogue: what each service costs, and the quote for one request.
//!
//! A quote has one line for the service (its variant multiplier folded in, so a 1.5x
//! variant of an exact-minute price is computed once and rounded once), one line per
//! add-on, and a minimum-charge line when the request costs less than the service minimum.
//! Each line rounds up to the next 0.001 credit and the total is the sum of the lines.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    credits::{CreditsError, Millicredits},
    validation::FieldErrors,
};

/// The longest media a single request may bill: one day.
pub const MAX_DURATION_SECONDS: u32 = 86_400;
/// The most characters a single request may bill.
pub const MAX_CHARACTERS: u64 = 10_000_000;
/// The most calls a single request may bill.
pub const MAX_CALLS: u64 = 1_000_000;
/// The highest rate a catalogue may set, in credits per unit.
const MAX_RATE: u32 = 1_000_000;
/// The highest variant multiplier a catalogue may set.
const MAX_MULTIPLIER: u32 = 100;
const SECONDS_PER_MINUTE: u32 = 60;

/// What a service is billed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Media duration, from `duration_seconds`.
    Minute,
    /// Started blocks of `block_size` characters, from `characters`.
    Characters,
    /// Flat price per call, from `calls` (default 1).
    Call,
}

/// How partial minutes are billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// A started minute is billed as a full minute.
    Up,
    /// Pro rata to the second.
    Exact,
}

/// One service, as written in the catalogue file and shown by `GET /v1/pricing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub description: String,
    pub unit: Unit,
    /// Credits per minute, per started block of characters, or per call.
    pub rate: Decimal,
    /// Minute services only; defaults to `up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<Rounding>,
    /// Character services only: the characters in one billed block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// The least a request is charged.
    #[serde(default)]
    pub minimum_credits: Decimal,
    /// Named multipliers of the service rate (for example `premium = 2`).
    #[serde(default)]
    pub variants: BTreeMap<String, Decimal>,
    /// Named extras charged on top, in credits per billed unit.
    #[serde(default)]
    pub addons: BTreeMap<String, Decimal>,
}

/// The whole catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub services: BTreeMap<String, Service>,
}

/// A catalogue that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("pricing catalogue is not valid TOML: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("pricing catalogue: {key}: {problem}")]
    Invalid { key: String, problem: String },
}

/// What a caller wants priced. The body of `POST /v1/estimate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    pub service: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::number::optional_decimal"
    )]
    pub duration_seconds: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::number::optional_whole"
    )]
    pub characters: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::number::optional_whole"
    )]
    pub calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<String>,
}

impl PriceRequest {
    /// The same request in a canonical form: two requests that price identically for the
    /// same reasons compare equal (add-on order does not matter, trailing zeros do not).
    fn canonical(&self) -> Self {
        let mut addons = self.addons.clone();
        addons.sort();
        Self {
            duration_seconds: self.duration_seconds.map(|d| d.normalize()),
            addons,
            ..self.clone()
        }
    }

    /// A stable digest of the canonical request, to tell a replay from a reused id.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(&self.canonical())
            .expect("a price request always serializes to JSON");
        hex::encode(Sha256::digest(canonical))
    }
}

/// The priced request.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Quote {
    pub service: String,
    pub lines: Vec<QuoteLine>,
    pub total: Millicredits,
}

/// One line of a quote.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QuoteLine {
    pub item: String,
    /// Billed units (minutes, blocks or calls), shown to three decimals.
    pub quantity: Decimal,
    pub unit: String,
    /// Credits per unit before any multiplier.
    pub rate: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<Decimal>,
    pub credits: Millicredits,
}

/// Billed units as a fraction, so that pro-rata prices divide once, at the end.
struct Billed {
    numerator: Decimal,
    divisor: Decimal,
    unit: String,
}

impl Billed {
    /// Credits for `rate` per unit, rounded up to the next millicredit.
    fn credits(&self, rate: Decimal) -> Result<Millicredits, CreditsError> {
        let amount = self
            .numerator
            .checked_mul(rate)
            .ok_or(CreditsError::OutOfRange)?;
        Millicredits::ceil_from_credits(amount / self.divisor)
    }

    fn quantity(&self) -> Decimal {
        (self.numerator / self.divisor).round_dp(3).normalize()
    }
}

impl Catalogue {
    /// The catalogue shipped as `deploy/pricing.toml`, used when no file is configured.
    pub const BUILT_IN: &'static str = include_str!("../../deploy/pricing.toml");

    pub fn parse(text: &str) -> Result<Self, CatalogueError> {
        let catalogue: Self = toml::from_str(text)?;
        catalogue.validate()?;
        Ok(catalogue)
    }

    fn validate(&self) -> Result<(), CatalogueError> {
        let invalid = |key: String, problem: &str| CatalogueError::Invalid {
            key,
            problem: problem.to_owned(),
        };
        if self.services.is_empty() {
            return Err(invalid(
                "services".into(),
                "at least one service is required",
            ));
        }
        for (name, service) in &self.services {
            let key = |field: &str| format!("services.{name}.{field}");
            if !is_identifier(name) {
                return Err(invalid(
                    format!("services.{name}"),
                    "service names use lowercase letters, digits and underscores",
                ));
            }
            if !is_positive_rate(service.rate) {
                return Err(invalid(key("rate"), "must be above 0 and at most 1000000"));
            }
            if service.round.is_some() && service.unit != Unit::Minute {
                return Err(invalid(key("round"), "only applies to unit = \"minute\""));
            }
            match (service.unit, service.block_size) {
                (Unit::Characters, None | Some(0)) => {
                    return Err(invalid(key("block_size"), "must be a positive integer"));
                }
                (Unit::Minute | Unit::Call, Some(_)) => {
                    return Err(invalid(
                        key("block_size"),
                        "only applies to unit = \"characters\"",
                    ));
                }
                _ => {}
            }
            if service.minimum_credits.is_sign_negative()
                || Millicredits::from_credits(service.minimum_credits).is_err()
            {
                return Err(invalid(
                    key("minimum_credits"),
                    "must be at least 0 with at most 3 decimals",
                ));
            }
            for (variant, multiplier) in &service.variants {
                let in_range =
                    *multiplier > Decimal::ZERO && *multiplier <= Decimal::from(MAX_MULTIPLIER);
                if !is_identifier(variant) || !in_range {
                    return Err(invalid(
                        key(&format!("variants.{variant}")),
                        "variant names use lowercase letters, digits and underscores; multipliers are above 0 and at most 100",
                    ));
                }
            }
            for (addon, rate) in &service.addons {
                if !is_identifier(addon) || !is_positive_rate(*rate) {
                    return Err(invalid(
                        key(&format!("addons.{addon}")),
                        "add-on names use lowercase letters, digits and underscores; rates are above 0 and at most 1000000",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Prices a request, or says which fields make it unpriceable.
    pub fn quote(&self, request: &PriceRequest) -> Result<Quote, FieldErrors> {
        let Some(service) = self.services.get(&request.service) else {
            let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
            return Err(FieldErrors::single(
                "service",
                format!(
                    "unknown service '{}'; known services: {}",
                    request.service,
                    known.join(", ")
                ),
            ));
        };
        let mut errors = FieldErrors::new();
        let billed = billed_units(&request.service, service, request, &mut errors);
        let multiplier = match &request.variant {
            None => None,
            Some(variant) => match service.variants.get(variant) {
                Some(multiplier) => Some(*multiplier),
                None => {
                    errors.add(
                        "variant",
                        unknown_option("variant", variant, &service.variants),
                    );
                    None
                }
            },
        };
        let mut addons = Vec::with_capacity(request.addons.len());
        for (i, addon) in request.addons.iter().enumerate() {
            match service.addons.get(addon) {
                Some(_) if request.addons[..i].contains(addon) => {
                    errors.add("addons", format!("add-on '{addon}' is listed twice"));
                }
                Some(rate) => addons.push((addon, *rate)),
                None => errors.add("addons", unknown_option("add-on", addon, &service.addons)),
            }
        }
        let billed = match billed {
            Some(billed) if errors.is_empty() => billed,
            _ => return Err(errors),
        };
        let out_of_range =
            |_| FieldErrors::single("service", "the price of this request is out of range");

        let effective_rate = service.rate * multiplier.unwrap_or(Decimal::ONE);
        let mut lines = vec![QuoteLine {
            item: request.service.clone(),
            quantity: billed.quantity(),
            unit: billed.unit.clone(),
            rate: service.rate,
            multiplier,
            credits: billed.credits(effective_rate).map_err(out_of_range)?,
        }];
        for (addon, rate) in addons {
            lines.push(QuoteLine {
                item: format!("add-on {addon}"),
                quantity: billed.quantity(),
                unit: billed.unit.clone(),
                rate,
                multiplier: None,
                credits: billed.credits(rate).map_err(out_of_range)?,
            });
        }
        let subtotal = sum(&lines).ok_or_else(|| out_of_range(CreditsError::OutOfRange))?;
        let minimum = Millicredits::from_credits(service.minimum_credits)
            .expect("catalogue validation checked minimum_credits");
        if subtotal < minimum {
            lines.push(QuoteLine {
                item: "minimum charge".to_owned(),
                quantity: Decimal::ONE,
                unit: "request".to_owned(),
                rate: service.minimum_credits,
                multiplier: None,
                credits: Millicredits(minimum.0 - subtotal.0),
            });
        }
        let total = subtotal.max(minimum);
        Ok(Quote {
            service: request.service.clone(),
            lines,
            total,
        })
    }
}

/// Reads the quantity field the service's unit calls for, recording problems in `errors`.
fn billed_units(
    name: &str,
    service: &Service,
    request: &PriceRequest,
    errors: &mut FieldErrors,
) -> Option<Billed> {
    let unused = |errors: &mut FieldErrors, field: &str, present: bool, unit: &str| {
        if present {
            errors.add(
                field,
                format!("not used by {name}, which is priced per {unit}"),
            );
        }
    };
    match service.unit {
        Unit::Minute => {
            unused(errors, "characters", request.characters.is_some(), "minute");
            unused(errors, "calls", request.calls.is_some(), "minute");
            let Some(seconds) = request.duration_seconds else {
                errors.add(
                    "duration_seconds",
                    format!("required: {name} is priced per minute"),
                );
                return None;
            };
            if seconds <= Decimal::ZERO || seconds > Decimal::from(MAX_DURATION_SECONDS) {
                errors.add(
                    "duration_seconds",
                    format!("must be above 0 and at most {MAX_DURATION_SECONDS}"),
                );
                return None;
            }
            if seconds.normalize().scale() > 3 {
                errors.add("duration_seconds", "must have at most 3 decimal places");
                return None;
            }
            let per_minute = Decimal::from(SECONDS_PER_MINUTE);
            let unit = "minute".to_owned();
            Some(match service.round.unwrap_or(Rounding::Up) {
                Rounding::Up => Billed {
                    numerator: (seconds / per_minute).ceil(),
                    divisor: Decimal::ONE,
                    unit,
                },
                Rounding::Exact => Billed {
                    numerator: seconds,
                    divisor: per_minute,
                    unit,
                },
            })
        }
        Unit::Characters => {
            unused(
                errors,
                "duration_seconds",
                request.duration_seconds.is_some(),
                "block of characters",
            );
            unused(
                errors,
                "calls",
                request.calls.is_some(),
                "block of characters",
            );
            let block = service
                .block_size
                .expect("catalogue validation requires block_size for characters");
            match request.characters {
                None => {
                    errors.add(
                        "characters",
                        format!("required: {name} is priced per {block} characters"),
                    );
                    None
                }
                Some(n) if n == 0 || n > MAX_CHARACTERS => {
                    errors.add(
                        "characters",
                        format!("must be between 1 and {MAX_CHARACTERS}"),
                    );
                    None
                }
                Some(n) => Some(Billed {
                    numerator: Decimal::from(n.div_ceil(block)),
                    divisor: Decimal::ONE,
                    unit: format!("{block} characters"),
                }),
            }
        }
        Unit::Call => {
            unused(
                errors,
                "duration_seconds",
                request.duration_seconds.is_some(),
                "call",
            );
            unused(errors, "characters", request.characters.is_some(), "call");
            match request.calls.unwrap_or(1) {
                n if n == 0 || n > MAX_CALLS => {
                    errors.add("calls", format!("must be between 1 and {MAX_CALLS}"));
                    None
                }
                n => Some(Billed {
                    numerator: Decimal::from(n),
                    divisor: Decimal::ONE,
                    unit: "call".to_owned(),
                }),
            }
        }
    }
}

fn sum(lines: &[QuoteLine]) -> Option<Millicredits> {
    lines.iter().try_fold(Millicredits::ZERO, |acc, line| {
        acc.checked_add(line.credits)
    })
}

fn unknown_option(kind: &str, given: &str, known: &BTreeMap<String, Decimal>) -> String {
    if known.is_empty() {
        format!("unknown {kind} '{given}'; this service has none")
    } else {
        let names: Vec<&str> = known.keys().map(String::as_str).collect();
        format!("unknown {kind} '{given}'; known: {}", names.join(", "))
    }
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_positive_rate(rate: Decimal) -> bool {
    rate > Decimal::ZERO && rate <= Decimal::from(MAX_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn built_in() -> Catalogue {
        Catalogue::parse(Catalogue::BUILT_IN).expect("the shipped catalogue is valid")
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test literal is a decimal")
    }

    fn request(service: &str) -> PriceRequest {
        PriceRequest {
            service: service.to_owned(),
            duration_seconds: None,
            characters: None,
            calls: None,
            variant: None,
            addons: vec![],
        }
    }

    fn seconds(service: &str, s: &str) -> PriceRequest {
        PriceRequest {
            duration_seconds: Some(dec(s)),
            ..request(service)
        }
    }

    fn total(catalogue: &Catalogue, request: &PriceRequest) -> Decimal {
        catalogue
            .quote(request)
            .expect("request is priceable")
            .total
            .to_credits()
    }

    #[test]
    fn published_examples_hold_with_the_shipped_rates() {
        let c = built_in();
        assert_eq!(
            total(&c, &seconds("dubbing", "30")),
            dec("10"),
            "30-second dub"
        );
        assert_eq!(
            total(&c, &seconds("stem_separation", "180")),
            dec("30"),
            "3-minute song"
        );
        assert_eq!(
            total(&c, &seconds("dubbing", "600")),
            dec("100"),
            "10-minute podcast"
        );
        assert_eq!(
            total(&c, &seconds("voice_training", "300")),
            dec("50"),
            "5-minute training"
        );
    }

    #[test]
    fn shipped_catalogue_has_every_reference_rate() {
        let c = built_in();
        let lip_sync = PriceRequest {
            addons: vec!["lip_sync".into()],
            ..seconds("media_translation", "60")
        };
        assert_eq!(total(&c, &lip_sync), dec("120"));
        let tts = PriceRequest {
            characters: Some(201),
            ..request("text_to_speech")
        };
        assert_eq!(total(&c, &tts), dec("4"));
        assert_eq!(total(&c, &request("voice_clone")), dec("10"));
        assert_eq!(total(&c, &seconds("text_translation", "61")), dec("2"));
        let karaoke = PriceRequest {
            variant: Some("karaoke".into()),
            ..seconds("stem_separation", "60")
        };
        assert_eq!(total(&c, &karaoke), dec("15"));
        let isolator = PriceRequest {
            variant: Some("instrument_isolator".into()),
            ..seconds("stem_separation", "60")
        };
        assert_eq!(total(&c, &isolator), dec("20"));
        assert_eq!(total(&c, &seconds("transcription", "90")), dec("1.5"));
        assert_eq!(total(&c, &request("speech_prediction")), dec("0.33"));
    }

    #[test]
    fn partial_minutes_round_up_only_where_configured() {
        let c = built_in();
        assert_eq!(total(&c, &seconds("dubbing", "61")), dec("20"));
        assert_eq!(total(&c, &seconds("dubbing", "60.001")), dec("20"));
        assert_eq!(total(&c, &seconds("stem_separation", "61")), dec("10.167"));
        assert_eq!(total(&c, &seconds("transcription", "20")), dec("0.334"));
    }

    #[test]
    fn minimum_applies_and_is_shown_as_its_own_line() {
        let c = Catalogue::parse(
            "[services.exact]\ndescription = \"x\"\nunit = \"minute\"\nround = \"exact\"\nrate = 10\nminimum_credits = 10\n",
        )
        .expect("valid catalogue");
        let quote = c.quote(&seconds("exact", "6")).expect("priceable");
        assert_eq!(quote.total, Millicredits(10_000));
        assert_eq!(quote.lines.len(), 2);
        assert_eq!(quote.lines[0].credits, Millicredits(1_000));
        assert_eq!(quote.lines[1].item, "minimum charge");
        assert_eq!(quote.lines[1].credits, Millicredits(9_000));
    }

    #[test]
    fn a_multiplier_on_a_pro_rata_price_rounds_once() {
        let c = built_in();
        let karaoke = PriceRequest {
            variant: Some("karaoke".into()),
            ..seconds("stem_separation", "40")
        };
        // 40 s at 10/min is 6.666..., times 1.5 is exactly 10.
        assert_eq!(total(&c, &karaoke), dec("10"));
    }

    #[test]
    fn fractional_rates_in_the_file_are_exact() {
        let c = built_in();
        assert_eq!(c.services["speech_prediction"].rate, dec("0.33"));
        let many = PriceRequest {
            calls: Some(3),
            ..request("speech_prediction")
        };
        assert_eq!(total(&c, &many), dec("0.99"));
    }

    #[test]
    fn unpriceable_requests_name_each_bad_field() {
        let c = built_in();
        let errors = c.quote(&request("nope")).expect_err("unknown service");
        assert!(
            errors
                .iter()
                .any(|(f, m)| f == "service" && m.contains("nope"))
        );

        let bad = PriceRequest {
            characters: Some(5),
            variant: Some("gold".into()),
            addons: vec!["lip_sync".into(), "lip_sync".into()],
            ..request("media_translation")
        };
        let errors = c.quote(&bad).expect_err("several problems");
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["addons", "characters", "duration_seconds", "variant"]
        );

        for s in ["0", "-1", "86400.001", "1.0001"] {
            let errors = c.quote(&seconds("dubbing", s)).expect_err("bad duration");
            assert!(errors.iter().any(|(f, _)| f == "duration_seconds"), "{s}");
        }
        let zero_chars = PriceRequest {
            characters: Some(0),
            ..request("text_to_speech")
        };
        assert!(c.quote(&zero_chars).is_err());
        let too_many_calls = PriceRequest {
            calls: Some(MAX_CALLS + 1),
            ..request("voice_clone")
        };
        assert!(c.quote(&too_many_calls).is_err());
    }

    #[test]
    fn invalid_catalogues_name_the_key() {
        let cases = [
            (
                "[services.a]\ndescription = \"x\"\nunit = \"call\"\nrate = 0\n",
                "services.a.rate",
            ),
            (
                "[services.a]\ndescription = \"x\"\nunit = \"characters\"\nrate = 1\n",
                "services.a.block_size",
            ),
            (
                "[services.a]\ndescription = \"x\"\nunit = \"call\"\nround = \"up\"\nrate = 1\n",
                "services.a.round",
            ),
            (
                "[services.a]\ndescription = \"x\"\nunit = \"call\"\nrate = 1\nminimum_credits = -1\n",
                "services.a.minimum_credits",
            ),
            (
                "[services.a]\ndescription = \"x\"\nunit = \"call\"\nrate = 1\n[services.a.variants]\nx = 0\n",
                "services.a.variants.x",
            ),
            (
                "[services.A]\ndescription = \"x\"\nunit = \"call\"\nrate = 1\n",
                "services.A",
            ),
        ];
        for (text, key) in cases {
            let err = Catalogue::parse(text).expect_err(key).to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
        let err = Catalogue::parse("[services.a]\nunit = \"call\"\nrate = 1\ncolour = 2\n")
            .expect_err("unknown key")
            .to_string();
        assert!(
            err.contains("colour") || err.contains("description"),
            "{err}"
        );
    }

    /// Any priceable request against the shipped catalogue, with a quantity in range.
    fn any_request() -> impl Strategy<Value = (PriceRequest, u64)> {
        let names: Vec<String> = built_in().services.into_keys().collect();
        (
            proptest::sample::select(names),
            1u64..=86_400_000,
            any::<u8>(),
            any::<u8>(),
        )
            .prop_map(|(name, amount, variant_pick, addon_mask)| {
                let c = built_in();
                let service = &c.services[&name];
                let variants: Vec<&String> = service.variants.keys().collect();
                let variant = (!variants.is_empty() && variant_pick % 2 == 1)
                    .then(|| variants[usize::from(variant_pick / 2) % variants.len()].clone());
                let addons = service
                    .addons
                    .keys()
                    .enumerate()
                    .filter(|(i, _)| addon_mask & (1 << (i % 8)) != 0)
                    .map(|(_, a)| a.clone())
                    .collect();
                let base = PriceRequest {
                    variant,
                    addons,
                    ..request(&name)
                };
                (with_amount(service.unit, base.clone(), amount), amount)
            })
    }

    /// Sets the service's quantity from a raw amount: millisecond durations, characters
    /// and calls are all scaled into their allowed ranges.
    fn with_amount(unit: Unit, base: PriceRequest, amount: u64) -> PriceRequest {
        match unit {
            Unit::Minute => PriceRequest {
                duration_seconds: Some(Decimal::new(amount as i64, 3)),
                ..base
            },
            Unit::Characters => PriceRequest {
                characters: Some(amount.min(MAX_CHARACTERS)),
                ..base
            },
            Unit::Call => PriceRequest {
                calls: Some(amount.min(MAX_CALLS)),
                ..base
            },
        }
    }

    proptest! {
        #[test]
        fn costs_are_positive_and_never_decrease_as_quantity_grows(
            (req, amount) in any_request(),
            extra in 0u64..5_000_000,
        ) {
            let c = built_in();
            let unit = c.services[&req.service].unit;
            let small = c.quote(&req).expect("in range");
            let larger_amount = (amount + extra).min(86_400_000);
            let larger = c.quote(&with_amount(unit, req.clone(), larger_amount)).expect("in range");
            prop_assert!(small.total > Millicredits::ZERO);
            prop_assert!(small.total <= larger.total);
            let minimum = Millicredits::from_credits(c.services[&req.service].minimum_credits).expect("valid");
            prop_assert!(small.total >= minimum);
            prop_assert_eq!(Some(small.total), sum(&small.lines));
        }

        #[test]
        fn rounded_units_bill_like_their_whole_unit(
            (req, _) in any_request(),
        ) {
            let c = built_in();
            let service = &c.services[&req.service];
            let whole = match service.unit {
                Unit::Minute if service.round != Some(Rounding::Exact) => {
                    let s = req.duration_seconds.expect("minute request");
                    PriceRequest { duration_seconds: Some((s / Decimal::from(60)).ceil() * Decimal::from(60)), ..req.clone() }
                }
                Unit::Characters => {
                    let block = service.block_size.expect("validated");
                    let n = req.characters.expect("character request");
                    PriceRequest { characters: Some(n.div_ceil(block) * block), ..req.clone() }
                }
                _ => req.clone(),
            };
            if whole.duration_seconds.is_none_or(|s| s <= Decimal::from(MAX_DURATION_SECONDS))
                && whole.characters.is_none_or(|n| n <= MAX_CHARACTERS)
            {
                prop_assert_eq!(c.quote(&req).expect("in range").total, c.quote(&whole).expect("in range").total);
            }
        }

        #[test]
        fn multipliers_and_addons_combine_as_published(
            minutes in 1u32..=1440,
            multiplier in 1u32..=40,
            addon_rate in 1u32..=100,
        ) {
            let text = format!(
                "[services.s]\ndescription = \"s\"\nunit = \"minute\"\nrate = 10\nminimum_credits = 10\n\
                 [services.s.variants]\nv = {}\n[services.s.addons]\na = {addon_rate}\n",
                Decimal::new(i64::from(multiplier), 1)
            );
            let c = Catalogue::parse(&text).expect("valid catalogue");
            let req = PriceRequest {
                variant: Some("v".into()),
                addons: vec!["a".into()],
                ..seconds("s", &(minutes * 60).to_string())
            };
            let expected = Decimal::from(minutes) * (Decimal::from(10) * Decimal::new(i64::from(multiplier), 1) + Decimal::from(addon_rate));
            let expected = expected.max(Decimal::from(10));
            prop_assert_eq!(total(&c, &req), expected.normalize());
        }
    }
}
