"""Writes prompts.jsonl (50 customer messages x 4 phrasings) and eval.jsonl (20 other messages x 4): chat prompts."""

import json
from pathlib import Path

MESSAGES = [
    "My order arrived two weeks late.",
    "The blender I bought stopped working after three days.",
    "You charged my card twice for the same order.",
    "I was on hold for forty minutes and nobody answered.",
    "The shoes I ordered are the wrong size.",
    "Your website keeps logging me out.",
    "The package was left in the rain and everything is soaked.",
    "I never received the refund you promised last month.",
    "The hotel room was not cleaned during my stay.",
    "My flight was cancelled and nobody told me.",
    "The pizza arrived cold and an hour late.",
    "Your app deleted all my saved notes.",
    "I asked for no onions and got extra onions.",
    "The manual is missing from the box.",
    "My internet has been down since yesterday morning.",
    "The jacket's zipper broke the first time I used it.",
    "I was overcharged for shipping.",
    "The delivery driver was rude to me.",
    "The coupon code you emailed me does not work.",
    "My subscription renewed even though I cancelled it.",
    "The phone case does not fit the phone model you listed.",
    "I got someone else's order instead of mine.",
    "Your store closed early and I drove there for nothing.",
    "The printer you sold me jams on every page.",
    "My gym membership was frozen without my permission.",
    "The table I ordered came with missing screws.",
    "The concert tickets never arrived in my inbox.",
    "The plant I ordered arrived dead.",
    "Your chatbot keeps sending me in circles.",
    "My bank transfer has been pending for five days.",
    "The rental car had a flat tyre when I picked it up.",
    "The headphones only play sound in one ear.",
    "I was promised a callback yesterday and never got one.",
    "The cake for my daughter's party had the wrong name on it.",
    "Your newsletter keeps coming after I unsubscribed.",
    "The paint colour looks nothing like the picture.",
    "My package says delivered but it is not here.",
    "The repair technician never showed up.",
    "The book I ordered has pages missing.",
    "My account was locked and I cannot reset the password.",
    "The coffee machine leaks water all over the counter.",
    "I was given the wrong medication dose instructions.",
    "The sofa has a stain on one of the cushions.",
    "My seat on the train was double booked.",
    "The warranty form on your site gives an error.",
    "Your invoice lists items I never ordered.",
    "The laptop charger gets very hot.",
    "The gift wrapping I paid for was not included.",
    "My food order was missing the main dish.",
    "The course I paid for will not let me log in.",
    "The dishwasher you installed is making a loud noise.",
    "My parcel was sent to my old address.",
    "The price went up between my cart and the checkout.",
    "The hotel lost my reservation.",
    "The toy I bought has a sharp broken edge.",
    "Your store refused to accept my return with a receipt.",
    "The taxi took a much longer route than needed.",
    "The vacuum cleaner lost suction after a week.",
    "My photos from the print shop came out blurry.",
    "The gym's showers have had no hot water for days.",
    "The salad had a bug in it.",
    "My phone bill doubled with no explanation.",
    "The earrings caused a rash, they are not hypoallergenic as listed.",
    "Your support email bounced back.",
    "The furniture delivery window was missed twice.",
    "My museum tickets were for the wrong date.",
    "The bike I bought has a bent wheel.",
    "My loyalty points disappeared from my account.",
    "The tent leaked on the first night of camping.",
    "The cinema cancelled my film without a refund.",
]
PHRASINGS = [
    "A customer writes: \"{m}\" Reply to them in one or two sentences.",
    "Write a short reply to this customer message: {m}",
    "You work in customer support. A customer says: \"{m}\" What do you reply?",
    "Answer this complaint briefly: {m}",
]


def rows(messages: list[str]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": p.format(m=m)}]} for m in messages for p in PHRASINGS]


if __name__ == "__main__":
    here = Path(__file__).parent
    for name, messages in (("prompts.jsonl", MESSAGES[:50]), ("eval.jsonl", MESSAGES[50:])):
        (here / name).write_text("".join(json.dumps(row) + "\n" for row in rows(messages)))
