//! The documents completed jobs answer: realistic, different per source, and deterministic per
//! content id (the same content id always gives the same document, but for `generatedAt`).
//!
//! The RNG is seeded from the content id and the source name, never from the clock. Dates inside
//! the documents are drawn from fixed calendar ranges for the same reason.

use chrono::{DateTime, Days, NaiveDate, SecondsFormat, Utc};
use liquidity_core::sources::JobRequest;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use crate::fault::stable_hash;

/// The document a completed job of `source` answers for `request`, stamped `generated_at`.
///
/// `source_1` is a credit bureau summary, `source_2` tax filings, `source_3` bank transactions;
/// any other name gets a generic document. Every document carries `source`, `contentId`,
/// `tenantId`, `reportId`, `generatedAt` and a `kind`.
pub fn document(source: &str, request: &JobRequest, generated_at: DateTime<Utc>) -> Value {
    let content = request.content_id.0.as_u128();
    let seed = stable_hash(&[&content.to_le_bytes(), source.as_bytes()]);
    let mut rng = StdRng::seed_from_u64(seed);
    let (kind, body) = match source {
        "source_1" => ("credit_bureau_summary", credit_bureau(&mut rng)),
        "source_2" => ("tax_filings", tax_filings(&mut rng)),
        "source_3" => ("bank_transactions", bank_transactions(&mut rng)),
        _ => ("generic", generic(&mut rng)),
    };
    let mut document = json!({
        "source": source,
        "kind": kind,
        "contentId": request.content_id,
        "tenantId": request.tenant_id,
        "reportId": request.report_id,
        "generatedAt": generated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    if let (Value::Object(document), Value::Object(body)) = (&mut document, body) {
        document.extend(body);
    }
    document
}

/// Cents to a JSON number with two decimals.
fn money(cents: i64) -> Value {
    json!(cents as f64 / 100.0)
}

/// A day between `from` and `from + span_days`, both included.
fn day(rng: &mut StdRng, from: NaiveDate, span_days: u64) -> NaiveDate {
    from + Days::new(rng.random_range(0..=span_days))
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("a valid calendar date")
}

fn digits(rng: &mut StdRng, count: usize) -> String {
    (0..count)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn credit_bureau(rng: &mut StdRng) -> Value {
    const TYPES: [(&str, i64, i64); 5] = [
        // (type, smallest and largest limit or principal, in dollars)
        ("credit_card", 500, 25_000),
        ("auto_loan", 5_000, 60_000),
        ("mortgage", 80_000, 900_000),
        ("student_loan", 5_000, 120_000),
        ("personal_loan", 1_000, 40_000),
    ];
    const CREDITORS: [&str; 8] = [
        "First National Bank",
        "Harbor Credit Union",
        "Summit Auto Finance",
        "Keystone Mortgage",
        "Northwind Card Services",
        "Evergreen Lending",
        "Pioneer Student Loans",
        "Atlas Savings",
    ];
    let score: i64 = rng.random_range(300..=850);
    // Low scores come with late payments: up to 6 delinquent accounts at 300, none above 740.
    let max_delinquent = ((740 - score).max(0) / 70) as usize;
    let account_count: usize = rng.random_range(2..=9);
    let mut delinquent_left = rng.random_range(0..=max_delinquent.min(account_count));
    let mut accounts = Vec::with_capacity(account_count);
    let (mut total_balance, mut total_limit, mut open_accounts) = (0i64, 0i64, 0u32);
    for _ in 0..account_count {
        let (kind, low, high) = *TYPES.choose(rng).expect("not empty");
        let limit = rng.random_range(low..=high) * 100;
        let closed = rng.random_bool(0.2);
        let balance = if closed { 0 } else { rng.random_range(0..=limit) };
        let status = if closed {
            "closed"
        } else if delinquent_left > 0 {
            delinquent_left -= 1;
            *["late_30_days", "late_60_days", "late_90_days", "collections"]
                .choose(rng)
                .expect("not empty")
        } else {
            "current"
        };
        if !closed {
            open_accounts += 1;
            total_balance += balance;
            total_limit += limit;
        }
        accounts.push(json!({
            "accountId": format!("ACC-{}", digits(rng, 10)),
            "type": kind,
            "creditor": CREDITORS.choose(rng).expect("not empty"),
            "openedOn": day(rng, date(2008, 1, 1), 6000).to_string(),
            "creditLimit": money(limit),
            "balance": money(balance),
            "monthlyPayment": money(balance / rng.random_range(24..=360)),
            "status": status,
        }));
    }
    let delinquencies = accounts
        .iter()
        .filter(|a| {
            a["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("late") || s == "collections")
        })
        .count();
    let band = match score {
        ..=579 => "poor",
        580..=669 => "fair",
        670..=739 => "good",
        740..=799 => "very_good",
        _ => "exceptional",
    };
    let inquiries_6m: u32 = rng.random_range(0..=4);
    json!({
        "bureau": "Simulated Credit Bureau",
        "subjectReference": format!("CB-{}", digits(rng, 8)),
        "score": { "value": score, "model": "FICO 8", "band": band },
        "openAccounts": open_accounts,
        "delinquencies": delinquencies,
        "inquiries": { "last6Months": inquiries_6m, "last12Months": inquiries_6m + rng.random_range(0..=3u32) },
        "totalBalance": money(total_balance),
        "totalCreditLimit": money(total_limit),
        "utilization": if total_limit == 0 { 0.0 } else { (total_balance * 1000 / total_limit) as f64 / 1000.0 },
        "accounts": accounts,
    })
}

fn tax_filings(rng: &mut StdRng) -> Value {
    const STATUSES: [&str; 4] = [
        "single",
        "married_filing_jointly",
        "married_filing_separately",
        "head_of_household",
    ];
    let status = *STATUSES.choose(rng).expect("not empty");
    let mut gross: i64 = rng.random_range(25_000..=400_000) * 100;
    let filings: Vec<Value> = (2022..=2024)
        .map(|year| {
            // Income moves a few percent a year, as incomes do.
            gross = gross * rng.random_range(95..=112) / 100;
            let standard = match status {
                "married_filing_jointly" => 2_770_000,
                "head_of_household" => 2_080_000,
                _ => 1_385_000,
            };
            let deductions = standard.max(gross * rng.random_range(5..=25) / 100);
            let taxable = (gross - deductions).max(0);
            let rate_permille = 100 + (taxable / 100).min(500_000) * 250 / 500_000;
            let tax_due = taxable * rate_permille / 1000;
            let withheld = tax_due * rng.random_range(85..=115) / 100;
            json!({
                "fiscalYear": year,
                "filingStatus": status,
                "filedOn": day(rng, date(year + 1, 2, 1), 74).to_string(),
                "grossIncome": money(gross),
                "deductions": money(deductions),
                "taxableIncome": money(taxable),
                "taxPaid": money(tax_due),
                "effectiveRate": if gross == 0 { 0.0 } else { (tax_due * 1000 / gross) as f64 / 1000.0 },
                "withheld": money(withheld),
                "refund": money((withheld - tax_due).max(0)),
                "amountDue": money((tax_due - withheld).max(0)),
            })
        })
        .collect();
    json!({
        "authority": "Simulated Revenue Service",
        "taxpayerId": format!("***-**-{}", digits(rng, 4)),
        "country": "US",
        "filings": filings,
    })
}

fn bank_transactions(rng: &mut StdRng) -> Value {
    const MERCHANTS: [(&str, &str, i64, i64); 10] = [
        // (merchant, category, smallest and largest debit, in cents)
        ("FreshMart Groceries", "groceries", 1_500, 18_000),
        ("City Transit", "transport", 250, 9_000),
        ("Shell", "fuel", 2_500, 9_500),
        ("Netflix", "subscriptions", 999, 2_299),
        ("Cafe Aroma", "restaurants", 450, 6_500),
        ("Amazon", "shopping", 1_200, 35_000),
        ("Metro Power & Light", "utilities", 4_000, 22_000),
        ("Riverside Apartments", "rent", 90_000, 280_000),
        ("PharmaPlus", "health", 800, 12_000),
        ("SkyHigh Airlines", "travel", 9_000, 120_000),
    ];
    let currency = *["USD", "EUR", "GBP"].choose(rng).expect("not empty");
    let opening: i64 = rng.random_range(50_000..=2_500_000);
    let period_end = day(rng, date(2025, 1, 1), 364);
    let period_start = period_end - Days::new(29);
    let count: usize = rng.random_range(8..=12);
    let mut dates: Vec<NaiveDate> = (0..count).map(|_| day(rng, period_start, 29)).collect();
    dates.sort();
    let mut balance = opening;
    let transactions: Vec<Value> = dates
        .into_iter()
        .map(|date| {
            let (merchant, category, amount) = if rng.random_bool(0.15) {
                ("Employer Payroll", "salary", rng.random_range(150_000..=650_000))
            } else {
                let (merchant, category, low, high) = *MERCHANTS.choose(rng).expect("not empty");
                (merchant, category, -rng.random_range(low..=high))
            };
            balance += amount;
            json!({
                "id": format!("TX-{}", digits(rng, 12)),
                "date": date.to_string(),
                "amount": money(amount),
                "merchant": merchant,
                "category": category,
                "balanceAfter": money(balance),
            })
        })
        .collect();
    json!({
        "account": {
            "bank": "Simulated Bank",
            "accountNumber": format!("****{}", digits(rng, 4)),
            "type": *["checking", "savings"].choose(rng).expect("not empty"),
            "holderReference": format!("BK-{}", digits(rng, 8)),
        },
        "currency": currency,
        "period": { "from": period_start.to_string(), "to": period_end.to_string() },
        "openingBalance": money(opening),
        "balance": money(balance),
        "transactions": transactions,
    })
}

fn generic(rng: &mut StdRng) -> Value {
    json!({
        "reference": format!("DOC-{}", digits(rng, 10)),
        "score": rng.random_range(0..=100u32),
        "verified": rng.random_bool(0.8),
        "items": (0..rng.random_range(1..=5)).map(|i| json!({ "index": i, "value": rng.random_range(0..=10_000u32) })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use liquidity_core::ids::{ReportContentId, ReportId, TenantId};

    use super::*;

    fn request() -> JobRequest {
        JobRequest {
            tenant_id: TenantId::new_random(),
            report_id: ReportId::new_random(),
            content_id: ReportContentId::new_random(),
        }
    }

    #[test]
    fn the_same_content_id_gives_the_same_document() {
        // Arrange
        let request = request();
        let now = Utc::now();

        // Act
        let documents: Vec<_> = ["source_1", "source_2", "source_3", "other"]
            .iter()
            .map(|source| (document(source, &request, now), document(source, &request, now)))
            .collect();

        // Assert
        for (first, second) in documents {
            assert_eq!(first, second);
        }
    }

    #[test]
    fn each_source_has_its_own_document_shape() {
        // Arrange
        let request = request();
        let now = Utc::now();

        // Act
        let credit = document("source_1", &request, now);
        let tax = document("source_2", &request, now);
        let bank = document("source_3", &request, now);
        let other = document("source_9", &request, now);

        // Assert
        let score = credit["score"]["value"].as_i64().unwrap();
        assert!((300..=850).contains(&score));
        assert!(credit["accounts"].as_array().is_some_and(|a| !a.is_empty()));
        assert_eq!(tax["filings"].as_array().map(Vec::len), Some(3));
        assert!(tax["filings"][0]["grossIncome"].is_number());
        let transactions = bank["transactions"].as_array().unwrap();
        assert!((8..=12).contains(&transactions.len()));
        assert!(transactions[0]["merchant"].is_string());
        assert_eq!(other["kind"], "generic");
        for doc in [&credit, &tax, &bank, &other] {
            assert_eq!(doc["contentId"], json!(request.content_id));
            for field in ["source", "tenantId", "reportId", "generatedAt"] {
                assert!(doc[field].is_string(), "{field} missing in {doc}");
            }
        }
    }
}
