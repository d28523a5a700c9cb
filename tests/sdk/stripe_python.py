"""The official Stripe Python SDK against topupd's stub provider: the flows topupd relies
on, written as an integrator would write them for Stripe's test mode.

Usage: python3 stripe_python.py BASE_URL    (run by tests/api/stripe_sdk.rs)
"""

import sys

import stripe


def expect_card_error(call, code):
    try:
        call()
    except stripe.CardError as error:
        assert error.code == code, (error.code, code)
        return error
    raise AssertionError(f"expected a card error {code}")


def main(base_url):
    stripe.api_key = "sk_test_stub"
    stripe.api_base = base_url
    stripe.max_network_retries = 0

    customer = stripe.Customer.create(name="Ada", email="ada@example.com", metadata={"account_id": "acct_sdk"})
    assert customer.object == "customer" and customer.email == "ada@example.com"

    # Saving a card for later, as a host's own form does with Stripe.js, and as Checkout
    # does in setup mode.
    setup = stripe.SetupIntent.create(customer=customer.id, usage="off_session", payment_method_types=["card"])
    assert setup.status == "requires_payment_method" and setup.client_secret.startswith(setup.id + "_secret_")
    setup = stripe.SetupIntent.confirm(setup.id, payment_method="pm_card_visa")
    assert setup.status == "succeeded", setup
    saved = stripe.PaymentMethod.retrieve(setup.payment_method)
    assert saved.customer == customer.id and saved.card.last4 == "4242"
    session = stripe.checkout.Session.create(
        mode="setup",
        customer=customer.id,
        currency="usd",
        success_url="https://shop.example/saved?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="https://shop.example/cancelled",
    )
    assert session.status == "open" and session.url.startswith(base_url), session
    assert stripe.checkout.Session.retrieve(session.id).mode == "setup"

    # Declining cards are refused when saved; chargeCustomerFail saves and declines later.
    refused = expect_card_error(
        lambda: stripe.PaymentMethod.attach("pm_card_chargeDeclinedInsufficientFunds", customer=customer.id),
        "card_declined",
    )
    assert refused.error.decline_code == "insufficient_funds"
    failing = stripe.PaymentMethod.attach("pm_card_chargeCustomerFail", customer=customer.id)
    visa = stripe.PaymentMethod.attach("pm_card_visa", customer=customer.id)
    assert visa.customer == customer.id and visa.card.last4 == "4242"

    def charge(card, key):
        return stripe.PaymentIntent.create(
            amount=1000,
            currency="usd",
            customer=customer.id,
            payment_method=card,
            off_session=True,
            confirm=True,
            metadata={"seq": key},
            idempotency_key=f"sdk-{key}",
        )

    # Off-session, the one-call form: charged in the create call.
    paid = charge(visa.id, "1")
    assert paid.status == "succeeded" and paid.amount_received == 1000, paid
    again = charge(visa.id, "1")
    assert again.id == paid.id, "the key replays the payment"
    declined = expect_card_error(lambda: charge(failing.id, "2"), "card_declined")
    assert declined.error.payment_intent.status == "requires_payment_method"

    # Off-session 3-D Secure: declined authentication_required, the payment embedded,
    # then confirmed on-session with the customer, who is sent to authenticate.
    authenticating = stripe.PaymentMethod.attach("pm_card_authenticationRequired", customer=customer.id)
    needs_customer = expect_card_error(lambda: charge(authenticating.id, "3"), "authentication_required")
    waiting = needs_customer.error.payment_intent
    assert waiting.status == "requires_payment_method", waiting
    assert needs_customer.error.payment_method.id == authenticating.id
    on_session = stripe.PaymentIntent.confirm(
        waiting.id,
        payment_method=needs_customer.error.payment_method.id,
        return_url="https://shop.example/back",
    )
    assert on_session.status == "requires_action", on_session
    redirect = on_session.next_action.redirect_to_url
    assert redirect.return_url == "https://shop.example/back"
    assert redirect.url.startswith(base_url)
    assert on_session.client_secret.startswith(waiting.id + "_secret_")

    # Unknown parameters are refused, naming the parameter.
    try:
        stripe.PaymentIntent.create(amount=1000, currency="usd", customer=customer.id, colour="blue")
        raise AssertionError("an unknown parameter was accepted")
    except stripe.InvalidRequestError as error:
        assert error.code == "parameter_unknown" and error.param == "colour", error

    # Lists page through has_more.
    seen = [pi.id for pi in stripe.PaymentIntent.list(customer=customer.id, limit=1).auto_paging_iter()]
    assert len(seen) == len(set(seen)) == 3, seen
    assert stripe.PaymentIntent.retrieve(paid.id).status == "succeeded"
    print("stripe-python flows passed against the stub")


if __name__ == "__main__":
    main(sys.argv[1])
