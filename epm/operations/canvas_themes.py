"""What words in a session mean for its business model canvas: themes and customer groups.

A theme is recognised by any of its keywords and adds one sentence to some of the nine blocks; a
sentence may name the business as its ``{subject}``, what it is (``{offering}``) or its first
customer ``{segment}``. Every sentence has a subject and a verb: the
canvas is read by people who sign it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Theme:
    keywords: frozenset[str]
    items: dict[str, str]


def _theme(keywords: str, **items: str) -> Theme:
    return Theme(frozenset(keywords.split()), items)


THEMES = (
    _theme("subscription subscriptions subscribe subscribers recurring membership memberships monthly",
           revenue_streams="Subscribers pay a recurring fee for the {offering}.",
           customer_relationships="Subscribers pause, skip or cancel in their own account.",
           key_activities="{subject} keeps subscribers and works to reduce churn."),
    _theme("delivery deliveries deliver delivers delivered delivering shipping logistics courier couriers doorstep",
           key_partners="Delivery and logistics partners carry the orders.",
           key_activities="{subject} fulfils orders and delivers them to the door.",
           channels="Orders are delivered to the homes of {segment}.",
           cost_structure="Each order carries a delivery and fulfilment cost.",
           key_resources="Packing, routing and couriers give the fulfilment capacity."),
    _theme("online app apps website e-commerce ecommerce platform digital web mobile portal order-ahead",
           channels="Customers order through the website and the mobile app.",
           key_resources="The digital platform holds the customer data.",
           cost_structure="The platform costs money to build, host and maintain.",
           key_partners="Technology and payment providers run parts of the platform.",
           key_activities="{subject} runs and improves its digital platform."),
    _theme("store stores shop shops showroom branch branches retail outlet outlets workshop workshops café cafés "
           "cafe cafes",
           channels="Customers buy in person at its own locations.",
           key_resources="The locations and their on-site staff serve customers every day.",
           cost_structure="Rent, fit-out and staff of each location are a large fixed cost.",
           customer_relationships="Staff on site give personal service."),
    _theme("b2b enterprise enterprises businesses companies corporate smes clients wholesale",
           channels="A sales team sells directly to business clients.",
           customer_relationships="Account managers look after the key business clients.",
           revenue_streams="Business clients pay under supply contracts."),
    _theme("local locally organic farm farms farmers producers ingredients sourced fresh seasonal",
           key_partners="Local producers and suppliers provide the ingredients.",
           value_propositions="Fresh, locally sourced ingredients set the {offering} apart.",
           cost_structure="Sourcing from local producers costs more than bulk buying."),
    _theme("sustainable sustainability green carbon electric e-bike e-bikes recycled recycling circular eco "
           "emissions",
           value_propositions="Customers leave a lower environmental footprint than with the alternatives.",
           key_partners="Sustainability certifiers and circular-economy partners back the claims."),
    _theme("rental rentals rent renting lease leasing sharing",
           revenue_streams="Customers pay rental fees.",
           key_resources="A maintained rental fleet is kept available.",
           key_activities="{subject} maintains the fleet and manages its availability."),
    _theme("repair repairs maintenance servicing refurbishment",
           revenue_streams="Customers pay for repairs and maintenance.",
           key_activities="{subject} carries out repair and maintenance work.",
           key_resources="Skilled technicians work with proper workshop equipment."),
    _theme("marketplace commission commissions sellers vendors",
           revenue_streams="Each transaction between buyers and sellers earns a commission.",
           key_partners="Sellers and service providers supply the marketplace."),
    _theme("software saas licence license licences licenses licensing api",
           revenue_streams="Customers pay for software subscriptions or licences.",
           key_activities="{subject} develops and releases the product."),
    _theme("consulting consultancy advice advisory coaching courses course workshops training",
           revenue_streams="Clients pay fees for advice, training or courses.",
           key_resources="Expert staff bring the know-how clients pay for."),
    _theme("community events event members social club",
           customer_relationships="A community grows around events and social channels.",
           channels="Social media and community events reach new customers."),
    _theme("affordable cheap cheaper low-cost save savings budget-friendly price prices pricing",
           value_propositions="The {offering} costs {segment} less than the alternatives."),
    _theme("fast faster quick quickly speed same-day instant convenient convenience easy busy time-saving",
           value_propositions="Convenience saves {segment} time and effort."),
    _theme("quality premium luxury craft handmade artisan artisanal expert specialty speciality roast roasted "
           "roasting roasts",
           value_propositions="Premium quality sets the {offering} apart."),
    _theme("personal personalised personalized tailored custom bespoke",
           value_propositions="Each customer gets a personalised offer.",
           key_activities="{subject} analyses customer data to personalise its offer."),
    _theme("health healthy nutrition wellbeing wellness fitness care meal meals",
           value_propositions="The {offering} gives {segment} healthier choices.",
           key_partners="Nutrition or health experts advise on the offer."),
    _theme("secure security privacy trusted trust cybersecurity",
           value_propositions="Customers trust the business to keep their data safe.",
           key_activities="{subject} manages the security of its systems."),
    _theme("iso certification certified compliance compliant audit audits gdpr regulation regulations regulatory "
           "accreditation standards",
           value_propositions="Clients get a clear route to certification and compliance.",
           key_activities="{subject} prepares audits and reviews compliance.",
           key_partners="Certification bodies and accredited auditors check the work."),
    _theme("marketing brand advertising campaign campaigns awareness seo",
           key_activities="{subject} markets the offer and builds the brand.",
           cost_structure="Marketing and advertising are the cost of winning customers.",
           channels="Online marketing and social media bring in new customers."),
    _theme("partnership partnerships partner partners resellers reseller distributors distribution",
           channels="Resellers and distribution partners sell on the business's behalf.",
           key_partners="Distribution and reseller partners extend the reach."),
    _theme("expand expansion cities city international countries regions launch open opening",
           key_activities="{subject} prepares and launches each new market.",
           cost_structure="Each new location has market-entry costs before it earns."),
)

# Where a business serves people in person: the outlet noun, and who its customers are there.
OUTLETS = {"café": "guests", "cafe": "guests", "restaurant": "guests", "bar": "guests", "hotel": "guests",
           "bakery": "customers", "store": "shoppers", "shop": "shoppers", "outlet": "shoppers",
           "showroom": "visitors", "branch": "customers", "salon": "clients", "clinic": "patients",
           "gym": "members", "studio": "clients", "workshop": "customers"}

# A word naming a group of customers, and the segment it stands for.
AUDIENCES = {
    "families": "Families", "parents": "Parents", "students": "Students", "commuters": "Commuters",
    "tourists": "Tourists and visitors", "smes": "Small and medium-sized businesses", "startups": "Start-ups",
    "enterprises": "Large enterprises", "businesses": "Businesses", "retailers": "Retailers",
    "restaurants": "Restaurants", "hospitals": "Hospitals", "clinics": "Clinics", "patients": "Patients",
    "developers": "Software developers", "farmers": "Farmers", "schools": "Schools", "seniors": "Seniors",
    "professionals": "Working professionals", "freelancers": "Freelancers", "municipalities": "Municipalities",
    "consumers": "Consumers", "shoppers": "Shoppers", "cyclists": "Cyclists", "homeowners": "Homeowners",
    "tenants": "Tenants", "landlords": "Landlords", "manufacturers": "Manufacturers", "travellers": "Travellers",
    "travelers": "Travellers", "gamers": "Gamers", "athletes": "Athletes", "teachers": "Teachers",
    "drivers": "Drivers", "couples": "Couples", "millennials": "Millennials", "pet": "Pet owners",
    "employers": "Employers", "nonprofits": "Non-profit organisations",
}
