-- FinOps FOCUS 1.2 cost and usage rows, read from the append-only charge_ledger: each
-- charge as first reported, plus 'Correction' rows that carry later changes (a restated
-- bill), so rows once reported never change and the sum equals the current bill.
-- ChargePeriodStart/End: the UTC day the usage happened (the batch's end, stg_batches.
-- used_at; a correction keeps its original's). BillingPeriodStart/End: the UTC month the
-- wallet was charged (the charge date, stg_batches.charged_at; a correction's: the month
-- the bill was restated). Summed by BillingPeriodStart, these rows equal the "as billed"
-- monthly spend of spend_by_provider and the report. Only billed money is here.
-- Amounts are exact: x_CostNanos is the integer; the *Cost columns are DECIMAL(38,9).
-- The gateway sells the models and issues the invoice (ProviderName, InvoiceIssuerName);
-- the model's maker is the PublisherName. Gateway fields are x_ columns.
create or replace view focus_charges as
with account as (
    select
        max(value) filter (where key = 'account.billing_account_id') as billing_account_id,
        max(value) filter (where key = 'account.billing_account_name') as billing_account_name,
        max(value) filter (where key = 'account.invoice_issuer_name') as invoice_issuer_name,
        max(value) filter (where key = 'account.provider_name') as provider_name
    from pipeline_meta
),

ledger as (
    select
        l.*,
        b.session_id,
        b.endpoint,
        b.metadata,
        date_trunc('day', l.charge_period_at at time zone 'UTC') at time zone 'UTC'
            as charge_day,
        date_trunc('month', l.billing_period_at at time zone 'UTC') at time zone 'UTC'
            as billing_month,
        nanos_to_usd(l.charge_nanos) as charge_usd,
        -- FOCUS unit format: a count unit from the dimension's last word ("Tokens")
        coalesce(
            nullif(
                upper(left(regexp_extract(l.dimension, '([A-Za-z][A-Za-z0-9]*)$', 1), 1))
                || lower(substr(regexp_extract(l.dimension, '([A-Za-z][A-Za-z0-9]*)$', 1), 2)),
                ''
            ),
            'Units'
        ) as unit_name
    from charge_ledger as l
    left join stg_batches as b on b.batch_id = l.batch_id
),

tags as (
    -- user metadata as FOCUS Tags: flat key-value pairs, nested values as JSON text; the
    -- config's attribution.tags when it names some, else every key
    select
        t.batch_id,
        json_group_object(t.tag_key, t.tag_json) as tags
    from int_batch_tags as t
    where t.batch_id in (select batch_id from ledger)
        and (
            not exists (select 1 from attribution_keys)
            or t.tag_key in (select tag_key from attribution_keys)
        )
    group by t.batch_id
)

select
    a.billing_account_id as BillingAccountId,
    a.billing_account_name as BillingAccountName,
    l.charge_usd as BilledCost,
    l.charge_usd as EffectiveCost,
    l.charge_usd as ListCost,
    l.charge_usd as ContractedCost,
    'USD' as BillingCurrency,
    l.billing_month as BillingPeriodStart,
    l.billing_month + interval 1 month as BillingPeriodEnd,
    l.charge_day as ChargePeriodStart,
    l.charge_day + interval 1 day as ChargePeriodEnd,
    case l.charge_kind when 'usage' then 'Usage' else 'Adjustment' end as ChargeCategory,
    l.charge_class as ChargeClass,
    'Usage-Based' as ChargeFrequency,
    case
        when l.charge_class = 'Correction'
            then 'correction of ' || coalesce(l.dimension, 'unitemised cost')
                || ' for batch ' || l.batch_id
        when l.charge_kind = 'usage' then l.dimension || ' for batch ' || l.batch_id
        else 'billed cost not itemised in pricing lines for batch ' || l.batch_id
    end as ChargeDescription,
    case when l.charge_kind = 'usage' then l.billable_units end as PricingQuantity,
    case
        when l.charge_kind <> 'usage' then null
        when l.unit_size > 1 and l.unit_size = floor(l.unit_size) and l.unit_size < 1e15
            then cast(l.unit_size as bigint)::varchar || ' ' || l.unit_name
        else l.unit_name
    end as PricingUnit,
    case when l.charge_kind = 'usage' then l.quantity end as ConsumedQuantity,
    case when l.charge_kind = 'usage' then l.unit_name end as ConsumedUnit,
    a.provider_name as ProviderName,
    coalesce(l.provider, 'unknown') as PublisherName,
    a.invoice_issuer_name as InvoiceIssuerName,
    null::varchar as InvoiceId,
    'LLM Batch Inference' as ServiceName,
    'AI and Machine Learning' as ServiceCategory,
    'Generative AI' as ServiceSubcategory,
    concat_ws(
        ':', coalesce(l.provider, 'unknown'), coalesce(l.model, 'unknown'),
        coalesce(l.dimension, 'adjustment')
    ) as SkuId,
    case when l.unit_price_usd is not null
        then concat_ws(
            ':', coalesce(l.provider, 'unknown'), coalesce(l.model, 'unknown'), l.dimension,
            coalesce(l.pricing_plan, ''), l.unit_price_usd::varchar
        )
    end as SkuPriceId,
    l.batch_id as ResourceId,
    'Batch' as ResourceType,
    coalesce(t.tags, '{}'::json) as Tags,
    l.provider as x_ModelProvider,
    l.model as x_Model,
    l.session_id as x_SessionId,
    l.charge_nanos as x_CostNanos,
    l.unit_price_usd as x_UnitPriceUsd,
    l.pricing_plan as x_PricingPlan,
    l.service_tier as x_ServiceTier,
    l.endpoint as x_Endpoint,
    l.billing_reason as x_BillingReason,
    l.charged as x_Charged,
    l.run_id as x_RecordedByRun,
    l.recorded_at as x_RecordedAt
from ledger as l
cross join account as a
left join tags as t on t.batch_id = l.batch_id
order by BillingPeriodStart, ChargePeriodStart, ResourceId, x_RecordedAt, SkuId
