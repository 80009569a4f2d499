//! Diesel's view of the tables; one schema for both backends (see migrations/{postgres,sqlite}).

diesel::table! {
    /// `key_id` and `key_hash` are the columns of the one key a customer had before `api_keys`:
    /// never read, `key_hash` blank; `key_id` repeats the public id of the customer's first key
    /// (the column is `UNIQUE NOT NULL`).
    customers (id) {
        id -> BigInt,
        name -> Text,
        key_id -> Text,
        key_hash -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        /// Where alerts and reports go (migrations/*/2026-12-08-000003_customer_email).
        email -> Nullable<Text>,
        /// `off`, `daily` or `weekly`.
        report_email -> Text,
        /// The end (Unix seconds) of the last period reported by e-mail
        /// (migrations/*/2026-12-09-000001_report_schedule).
        report_sent_until -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// A customer's API keys (see migrations/*/2026-12-08-000002_api_keys); times in Unix ms.
    api_keys (id) {
        id -> BigInt,
        customer_id -> BigInt,
        key_id -> Text,
        key_hash -> Text,
        scope -> Text,
        name -> Nullable<Text>,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::joinable!(api_keys -> customers (customer_id));

diesel::table! {
    adverts (id) {
        id -> BigInt,
        customer_id -> BigInt,
        title -> Text,
        body -> Text,
        genre -> Text,
        lang -> Nullable<Text>,
        target_url -> Text,
        link_code -> Text,
        status -> Text,
        weight -> Integer,
        starts_at -> Nullable<BigInt>,
        ends_at -> Nullable<BigInt>,
        max_impressions -> Nullable<BigInt>,
        max_clicks -> Nullable<BigInt>,
        daily_max_impressions -> Nullable<BigInt>,
        image_hash -> Text,
        image_width -> Integer,
        image_height -> Integer,
        source_format -> Text,
        source_width -> Integer,
        source_height -> Integer,
        offload_status -> Text,
        offloaded_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        cta -> Nullable<Text>,
        more_titles -> Text,
        more_texts -> Text,
        targeting -> Nullable<Text>,
        conversion_tracking -> Bool,
        pacing -> Text,
    }
}

diesel::table! {
    advert_creatives (advert_id, number) {
        advert_id -> BigInt,
        number -> Integer,
        image_index -> Integer,
        title -> Text,
        body -> Text,
        status -> Text,
        created_at -> BigInt,
    }
}

diesel::joinable!(advert_creatives -> adverts (advert_id));

diesel::table! {
    advert_images (advert_id, image_index) {
        advert_id -> BigInt,
        image_index -> Integer,
        hash -> Text,
        mime -> Text,
        width -> Integer,
        height -> Integer,
        bytes -> Binary,
        source_format -> Text,
        source_width -> Integer,
        source_height -> Integer,
        original -> Binary,
    }
}

diesel::joinable!(advert_images -> adverts (advert_id));

diesel::table! {
    advert_reach (advert_id, day) {
        advert_id -> BigInt,
        day -> BigInt,
        sketch -> Nullable<Binary>,
    }
}

diesel::table! {
    creative_arms (advert_id, placement, creative) {
        advert_id -> BigInt,
        placement -> Text,
        creative -> Integer,
        impressions -> BigInt,
        clicks -> BigInt,
    }
}

diesel::table! {
    creatives (advert_id) {
        advert_id -> BigInt,
        hash -> Text,
        mime -> Text,
        width -> Integer,
        height -> Integer,
        bytes -> Binary,
    }
}

diesel::table! {
    advert_originals (advert_id) {
        advert_id -> BigInt,
        mime -> Text,
        bytes -> Binary,
    }
}

diesel::table! {
    jobs (id) {
        id -> BigInt,
        kind -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        max_attempts -> Integer,
        run_at -> BigInt,
        locked_until -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        request_id -> Nullable<Text>,
    }
}

diesel::joinable!(adverts -> customers (customer_id));
diesel::joinable!(creatives -> adverts (advert_id));
diesel::joinable!(advert_originals -> adverts (advert_id));

diesel::table! {
    advert_stats (advert_id, bucket) {
        advert_id -> BigInt,
        bucket -> BigInt,
        clicks -> BigInt,
        bot_clicks -> BigInt,
        duplicate_clicks -> BigInt,
        impressions -> BigInt,
        suspicious_clicks -> BigInt,
        suspicious_impressions -> BigInt,
    }
}

diesel::table! {
    advert_placement_stats (advert_id, bucket, placement) {
        advert_id -> BigInt,
        bucket -> BigInt,
        placement -> Text,
        clicks -> BigInt,
        bot_clicks -> BigInt,
        duplicate_clicks -> BigInt,
        impressions -> BigInt,
        suspicious_clicks -> BigInt,
        suspicious_impressions -> BigInt,
    }
}

diesel::table! {
    advert_creative_stats (advert_id, bucket, creative) {
        advert_id -> BigInt,
        bucket -> BigInt,
        creative -> Integer,
        clicks -> BigInt,
        bot_clicks -> BigInt,
        duplicate_clicks -> BigInt,
        impressions -> BigInt,
        suspicious_clicks -> BigInt,
        suspicious_impressions -> BigInt,
    }
}

diesel::table! {
    advert_device_stats (advert_id, bucket, device) {
        advert_id -> BigInt,
        bucket -> BigInt,
        device -> Text,
        clicks -> BigInt,
        bot_clicks -> BigInt,
        duplicate_clicks -> BigInt,
        impressions -> BigInt,
        suspicious_clicks -> BigInt,
        suspicious_impressions -> BigInt,
    }
}

diesel::table! {
    advert_country_stats (advert_id, bucket, country) {
        advert_id -> BigInt,
        bucket -> BigInt,
        country -> Text,
        clicks -> BigInt,
        bot_clicks -> BigInt,
        duplicate_clicks -> BigInt,
        impressions -> BigInt,
        suspicious_clicks -> BigInt,
        suspicious_impressions -> BigInt,
    }
}

diesel::table! {
    counter_flushes (flush_id) {
        flush_id -> Text,
        applied_at -> BigInt,
    }
}

diesel::table! {
    advert_variants (advert_id, placement, image_index, creative) {
        advert_id -> BigInt,
        placement -> Text,
        image_index -> Integer,
        creative -> Integer,
        fingerprint -> Text,
        status -> Text,
        reason -> Nullable<Text>,
        width -> Integer,
        height -> Integer,
        mime -> Nullable<Text>,
        hash -> Nullable<Text>,
        bytes -> Nullable<Binary>,
        byte_len -> Integer,
        title -> Text,
        body -> Text,
        crop_x -> Integer,
        crop_y -> Integer,
        crop_w -> Integer,
        crop_h -> Integer,
        updated_at -> BigInt,
    }
}

diesel::joinable!(advert_variants -> adverts (advert_id));

diesel::table! {
    sessions (id_hash) {
        id_hash -> Text,
        customer_id -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::joinable!(sessions -> customers (customer_id));

diesel::table! {
    conversions (click_id, event) {
        click_id -> Text,
        event -> Text,
        customer_id -> BigInt,
        advert_id -> BigInt,
        placement -> Nullable<Text>,
        creative -> Nullable<Integer>,
        device -> Nullable<Text>,
        country -> Nullable<Text>,
        clicked_at -> BigInt,
        converted_at -> BigInt,
        value_micros -> Nullable<BigInt>,
        currency -> Nullable<Text>,
    }
}

diesel::table! {
    signing_keys (name) {
        name -> Text,
        secret -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    events (seq) {
        seq -> BigInt,
        id -> Text,
        #[sql_name = "type"]
        kind -> Text,
        occurred_at -> BigInt,
        customer_id -> BigInt,
        advert_id -> Nullable<BigInt>,
        data -> Text,
        published_at -> Nullable<BigInt>,
        publishing_until -> Nullable<BigInt>,
        dispatched_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// A customer's webhooks (see migrations/*/2026-12-08-000004_webhooks); times in Unix ms.
    webhooks (id) {
        id -> BigInt,
        public_id -> Text,
        customer_id -> BigInt,
        url -> Text,
        events -> Text,
        secret -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        disabled_at -> Nullable<BigInt>,
        disabled_reason -> Nullable<Text>,
        failing_since -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One event on its way to one webhook.
    webhook_deliveries (id) {
        id -> BigInt,
        webhook_id -> BigInt,
        event_id -> Text,
        event_type -> Text,
        status -> Text,
        attempts -> Integer,
        last_response_code -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        delivered_at -> Nullable<BigInt>,
    }
}

diesel::joinable!(webhook_deliveries -> webhooks (webhook_id));

diesel::allow_tables_to_appear_in_same_query!(
    events,
    webhooks,
    webhook_deliveries,
    api_keys,
    conversions,
    signing_keys,
    advert_creatives,
    advert_images,
    advert_reach,
    advert_variants,
    customers,
    adverts,
    creative_arms,
    creatives,
    advert_originals,
    jobs,
    advert_stats,
    advert_placement_stats,
    advert_creative_stats,
    advert_device_stats,
    advert_country_stats,
    counter_flushes,
    sessions,
);
