-- one row per batch and top-level metadata key: the tag a batch carries. Scalar values as
-- text, nested values as JSON text; a key set to JSON null has a null tag_value (no tag:
-- untagged in spend_by_tag, kept in FOCUS Tags); a key given twice counts once
-- (its first value). Each object is parsed once into a map: json_each's rows each carry
-- the whole document, and 100 batches of 20,000 keys ran every reader out of memory.
-- Only an object a map cannot hold (a key given twice) is read with json_each.
create or replace view int_batch_tags as
with objects as (
    select
        batch_id,
        metadata,
        json_transform(metadata, '"MAP(VARCHAR, JSON)"') as tags
    from stg_batches
    where json_type(metadata) = 'OBJECT'
),

from_maps as (
    select
        batch_id,
        unnest(map_keys(tags)) as tag_key,
        unnest(map_values(tags)) as value
    from objects
    where tags is not null
),

from_twice_given as (
    select
        o.batch_id,
        t.key as tag_key,
        t.value
    from objects as o,
        json_each(o.metadata) as t
    where o.tags is null
    qualify row_number() over (partition by o.batch_id, t.key order by t.id) = 1
),

valued as (
    select * from from_maps
    union all
    select * from from_twice_given
)

select
    batch_id,
    tag_key,
    case
        when value is null or json_type(value) = 'NULL' then null
        when json_type(value) in ('OBJECT', 'ARRAY') then value::varchar
        else value ->> '$'
    end as tag_value,
    -- the same as a JSON value for FOCUS Tags: a scalar as sent, nested as JSON text
    case
        when json_type(value) in ('OBJECT', 'ARRAY') then to_json(value::varchar)
        else coalesce(value, 'null'::json)
    end as tag_json
from valued
